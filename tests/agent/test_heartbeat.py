"""Signed heartbeats: what verify accepts and refuses, with certificates from the real
appliance CA code; the agent's sender signs what it sends and survives failures."""

from __future__ import annotations

import asyncio
import base64
import datetime
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from appliances.agent.heartbeat import HeartbeatSender, short_error
from appliances.common import certs
from appliances.common import heartbeat as wire
from mgmt.orchestration.pki import CA_VALIDITY, ApplianceCA


def _ca(tmp_path: Path) -> ApplianceCA:
    key, cert = certs.make_ca("Skiff appliance CA", CA_VALIDITY)
    return ApplianceCA(cert, key, certs.cert_pem(cert).decode(), tmp_path / "pki")


@pytest.fixture
def ca(tmp_path):
    return _ca(tmp_path)


def _beat(name: str = "r-7-VM", **changes) -> wire.Heartbeat:
    fields = {
        "appliance_id": name, "role": "router", "applied_generation": 3,
        "document_hash": "ab" * 32, "converged": True, "last_error": None,
        "version": "0.1.0", "uptime_s": 12.5, "sequence": time.time_ns() // 1000,
        "sent_at": time.time(), "interval": 2.0, "redundant_state": None,
    }
    return wire.Heartbeat(**{**fields, **changes})


def _signed(ca: ApplianceCA, beat: wire.Heartbeat, name: str | None = None):
    issued = ca.issue_agent(name or beat.appliance_id, "169.254.9.20")
    body = beat.body()
    key = certs.load_key(issued.key.encode())
    return body, wire.sign(body, key, issued.cert.encode())


def test_a_signed_heartbeat_from_the_ca_is_accepted(ca):
    beat = _beat()
    body, headers = _signed(ca, beat)
    assert wire.verify(body, headers, ca.cert) == beat


def test_a_certificate_from_another_ca_is_refused(ca, tmp_path):
    other = _ca(tmp_path / "other")
    body, headers = _signed(other, _beat())
    with pytest.raises(wire.Rejected, match="not issued by the appliance CA") as refused:
        wire.verify(body, headers, ca.cert)
    assert refused.value.status == 403


def test_a_certificate_for_another_appliance_is_refused(ca):
    body, headers = _signed(ca, _beat("r-8-VM"), name="r-7-VM")
    with pytest.raises(wire.Rejected, match="names r-7-VM, not r-8-VM") as refused:
        wire.verify(body, headers, ca.cert)
    assert refused.value.status == 403


def test_a_tampered_body_is_refused(ca):
    body, headers = _signed(ca, _beat(applied_generation=3))
    tampered = body.replace(b'"applied_generation":3', b'"applied_generation":4')
    assert tampered != body
    with pytest.raises(wire.Rejected, match="signature does not match") as refused:
        wire.verify(tampered, headers, ca.cert)
    assert refused.value.status == 403


def test_a_signature_of_another_body_is_refused(ca):
    body, headers = _signed(ca, _beat())
    _, other = _signed(ca, _beat(converged=False))
    with pytest.raises(wire.Rejected, match="signature does not match"):
        wire.verify(body, {**headers, wire.SIGNATURE_HEADER: other[wire.SIGNATURE_HEADER]},
                    ca.cert)


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_a_send_time_far_from_the_clock_is_refused(ca, skew):
    body, headers = _signed(ca, _beat(sent_at=time.time() + skew))
    with pytest.raises(wire.Rejected, match="this server's clock") as refused:
        wire.verify(body, headers, ca.cert)
    assert refused.value.status == 403


def test_an_expired_certificate_is_refused(ca):
    body, headers = _signed(ca, _beat())
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(wire.Rejected, match="not valid now"):
        wire.verify(body, headers, ca.cert, now=later, max_skew=1e9)


def test_malformed_heartbeats_are_bad_requests(ca):
    body, headers = _signed(ca, _beat())
    cases = [
        {k: v for k, v in headers.items() if k != wire.SIGNATURE_HEADER},
        {**headers, wire.CERT_HEADER: "not base64!"},
        {**headers, wire.CERT_HEADER: base64.b64encode(b"no certificate").decode()},
    ]
    for bad in cases:
        with pytest.raises(wire.Rejected) as refused:
            wire.verify(body, bad, ca.cert)
        assert refused.value.status == 400, bad
    # A correctly signed body that is no heartbeat (a string where a number belongs).
    data = orjson.loads(body) | {"sequence": "12"}
    issued = ca.issue_agent("r-7-VM", "169.254.9.20")
    raw = orjson.dumps(data)
    signed = wire.sign(raw, certs.load_key(issued.key.encode()), issued.cert.encode())
    with pytest.raises(wire.Rejected, match="sequence") as refused:
        wire.verify(raw, signed, ca.cert)
    assert refused.value.status == 400


def test_sequence_numbers_keep_growing_across_restarts():
    seq = wire.Sequence()
    first = seq.next(1_000)
    assert [first, seq.next(1_000), seq.next(900)] == [1_000, 1_001, 1_002]
    restarted = wire.Sequence(last=seq.last)  # a clock stepped back: the stored one wins
    assert restarted.next(500) == 1_003


def test_short_error():
    assert short_error(None) is None
    assert short_error({"service": "nftables", "message": "bad\n  rule", "output": "x"}) == (
        "nftables bad rule")
    assert len(short_error("e" * 5000) or "") == wire.MAX_ERROR


async def _receiver(ca: ApplianceCA, got: list, status: int = 204):
    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        got.append(wire.verify(body, request.headers, ca.cert))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post(wire.PATH, post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}{wire.PATH}"


def _sender(ca, tmp_path, url, state=None, interval=2.0) -> HeartbeatSender:
    issued = ca.issue_agent("r-7-VM", "169.254.9.20")
    (tmp_path / "agent.key").write_text(issued.key)
    (tmp_path / "agent.pem").write_text(issued.cert)
    state = state or (lambda: {"appliance_id": "r-7-VM", "role": "router",
                               "applied_generation": None, "document_hash": None,
                               "converged": True, "last_error": None, "version": "t"})
    return HeartbeatSender(url, interval, tmp_path / "agent.key", tmp_path / "agent.pem",
                           state, tmp_path)


async def test_the_sender_signs_what_it_sends_and_numbers_it_upward(ca, tmp_path):
    got: list[wire.Heartbeat] = []
    runner, url = await _receiver(ca, got)
    try:
        sender = _sender(ca, tmp_path, url)
        async with aiohttp.ClientSession() as session:
            await sender.send_once(session)
            await sender.send_once(session)
        again = _sender(ca, tmp_path, url)  # a restarted agent, same state folder
        async with aiohttp.ClientSession() as session:
            await again.send_once(session)
    finally:
        await runner.cleanup()
    assert [b.appliance_id for b in got] == ["r-7-VM"] * 3
    assert got[0].sequence < got[1].sequence < got[2].sequence
    assert got[0].interval == 2.0 and got[0].converged


async def test_the_sender_logs_failures_and_keeps_going(ca, tmp_path, caplog):
    got: list[wire.Heartbeat] = []
    runner, url = await _receiver(ca, got, status=403)
    sender = _sender(ca, tmp_path, url, interval=0.1)
    sender.start()
    try:
        while sender.failures < 2:  # refused twice: nothing raised, the task goes on
            await asyncio.sleep(0.05)
        assert sender._task is not None and not sender._task.done()
    finally:
        await sender.stop()
        await runner.cleanup()
    assert sender.sent == 0 and len(got) >= 2
    assert "HTTP 403" in caplog.text
