"""Load balancing end to end: the real agent and HAProxy in a lab, real HTTP traffic.

Clients sit in the lab's internet (203.0.113.1, and the remote clients 198.51.100.10
and .20); members are the guests' httpd. One lab for the module; every test applies
the document it needs on top of the baseline.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e_traffic import status, until

from appliances.lab.baseline import derive
from appliances.lab.lab import Lab
from appliances.lab.testing import lab_skip_reason, running_lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

LB_IP = "203.0.113.11"
CLIENT_OK = "198.51.100.10"
CLIENT_OTHER = "198.51.100.20"
GUESTS = {"g1": "10.1.1.11", "g2": "10.1.1.12", "g3": "10.1.1.13"}
PROXY_PORT = 8000  # members' httpd that expects the PROXY protocol
COOKIE_PORT = 8001  # members' httpd that sets an application cookie


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    async with running_lab(guests=3) as the_lab:
        the_lab.baseline = the_lab.document  # type: ignore[attr-defined]
        for g in GUESTS:
            the_lab.spawn_in(g, f"{g}-proxy", [sys.executable, "-m", "appliances.lab.httpd",
                                               "--name", g, "--port", str(PROXY_PORT),
                                               "--accept-proxy"])
            the_lab.spawn_in(g, f"{g}-cookie", [sys.executable, "-m", "appliances.lab.httpd",
                                                "--name", g, "--port", str(COOKIE_PORT),
                                                "--cookie", "JSESSIONID"])
        yield the_lab


def rule(rule_id: str = "web", port: int = 80, member_port: int = 80, **extra) -> dict:
    members = [{"id": g, "ip": ip} for g, ip in GUESTS.items()]
    return {"id": rule_id, "public_ip": LB_IP, "public_port": port,
            "private_port": member_port, "members": members, **extra}


async def apply(lab: Lab, *rules: dict) -> dict:
    base = lab.baseline.model_copy(update={"generation": lab.document.generation})
    reply = await lab.apply(derive(base, load_balancers=list(rules)))
    return reply.body


async def fetch(lab: Lab, url: str, *extra: str, src: str | None = None,
                timeout: float = 3.0) -> tuple[bool, str]:
    argv = ["curl", "-s", "--max-time", str(timeout), *extra]
    if src:
        argv += ["--interface", src]
    res = await lab.run_in("internet", [*argv, url], timeout=timeout + 10)
    return res.ok, res.stdout.strip()


async def servers_seen(lab: Lab, url: str, count: int, *extra: str) -> list[str]:
    answers = []
    for _ in range(count):
        ok, body = await fetch(lab, url, *extra)
        assert ok, f"{url} failed"
        answers.append(body.split()[0])
    return answers


async def lb_status(lab: Lab, rule_id: str = "web") -> dict:
    return (await status(lab))["services"]["haproxy"]["rules"][rule_id]


# -- balancing and protocols -----------------------------------------------------------------


async def test_roundrobin_reaches_every_member(lab):
    await apply(lab, rule())
    seen = await servers_seen(lab, f"http://{LB_IP}/", 9)
    assert set(seen) == set(GUESTS)
    ok, body = await fetch(lab, f"http://{LB_IP}/")
    assert body.split()[1].startswith("10.1.1.1:"), body  # tcp mode: the router connects


async def test_http_mode_adds_x_forwarded_for(lab):
    await apply(lab, rule(protocol="http"))
    ok, body = await fetch(lab, f"http://{LB_IP}/", src=CLIENT_OK)
    assert ok and f"xff={CLIENT_OK}" in body, body


async def test_tcp_proxy_tells_members_the_client(lab):
    await apply(lab, rule(protocol="tcp-proxy", member_port=PROXY_PORT))
    ok, body = await fetch(lab, f"http://{LB_IP}/", src=CLIENT_OK)
    assert ok and body.split()[1].startswith(f"{CLIENT_OK}:"), body


async def test_source_cidrs_limit_who_reaches_the_listener(lab):
    await apply(lab, rule(source_cidrs=[f"{CLIENT_OK}/32"]))
    assert (await fetch(lab, f"http://{LB_IP}/", src=CLIENT_OK))[0]
    assert not (await fetch(lab, f"http://{LB_IP}/", src=CLIENT_OTHER, timeout=1.0))[0]


async def test_leastconn_and_source_algorithms(lab):
    await apply(lab, rule(algorithm="leastconn"))
    assert set(await servers_seen(lab, f"http://{LB_IP}/", 9)) == set(GUESTS)
    await apply(lab, rule(algorithm="source"))
    assert len(set(await servers_seen(lab, f"http://{LB_IP}/", 6))) == 1


# -- stickiness -----------------------------------------------------------------------------


async def test_lb_cookie_stickiness(lab, tmp_path):
    await apply(lab, rule(protocol="http", stickiness={"method": "LbCookie",
                                                       "cookie_name": "SKIFFLB"}))
    jar = str(tmp_path / "jar")
    first = await servers_seen(lab, f"http://{LB_IP}/", 1, "-c", jar)
    assert "SKIFFLB" in (tmp_path / "jar").read_text()
    again = await servers_seen(lab, f"http://{LB_IP}/", 6, "-b", jar)
    assert set(again) == set(first)


async def test_app_cookie_stickiness(lab, tmp_path):
    await apply(lab, rule(protocol="http", member_port=COOKIE_PORT,
                          stickiness={"method": "AppCookie", "cookie_name": "JSESSIONID"}))
    jar = str(tmp_path / "jar")
    first = await servers_seen(lab, f"http://{LB_IP}/", 1, "-c", jar)
    assert "JSESSIONID" in (tmp_path / "jar").read_text()
    again = await servers_seen(lab, f"http://{LB_IP}/", 6, "-b", jar)
    assert set(again) == set(first)
    # Without the cookie, round robin goes on.
    assert len(set(await servers_seen(lab, f"http://{LB_IP}/", 6))) > 1


async def test_source_based_stickiness(lab):
    await apply(lab, rule(stickiness={"method": "SourceBased", "table_size": 1000,
                                      "expire_s": 600}))
    assert len(set(await servers_seen(lab, f"http://{LB_IP}/", 6))) == 1


# -- health, runtime changes and reloads ----------------------------------------------------


async def _wait_member(lab: Lab, member: str, up: bool, timeout: float = 15.0) -> dict:
    def done(st: dict) -> bool:
        return st["members"].get(member, {}).get("status", "").startswith("UP") == up

    st = await until(lambda: lb_status(lab), done, timeout=timeout, interval=0.3)
    assert done(st), st
    return st


async def test_failed_member_leaves_rotation_and_returns(lab):
    health = {"ping_path": "/", "interval_s": 1, "response_timeout_s": 1,
              "healthy_threshold": 1, "unhealthy_threshold": 2}
    await apply(lab, rule(protocol="http", health_check=health))
    await _wait_member(lab, "g3", up=True)
    pid = lab.pids["g3-httpd"]
    await lab.run_in("g3", ["kill", str(pid)])
    st = await _wait_member(lab, "g3", up=False)
    assert st["members_up"] == 2 and st["members_down"] == 1
    assert "g3" not in await servers_seen(lab, f"http://{LB_IP}/", 9)

    # Member health survives a reload (server-state file): g3 stays out right after it.
    other = rule("other", port=81)
    await apply(lab, rule(protocol="http", health_check=health), other)
    assert (await lb_status(lab))["members"]["g3"]["status"].startswith("DOWN")
    assert "g3" not in await servers_seen(lab, f"http://{LB_IP}/", 6)

    lab.spawn_in("g3", "g3-httpd", [sys.executable, "-m", "appliances.lab.httpd",
                                    "--name", "g3", "--port", "80"])
    await _wait_member(lab, "g3", up=True)
    assert "g3" in await servers_seen(lab, f"http://{LB_IP}/", 9)


async def test_weight_and_disable_go_through_the_runtime_api(lab):
    await apply(lab, rule())
    reloads = (await status(lab))["services"]["haproxy"]["reloads"]
    members = [{"id": "g1", "ip": GUESTS["g1"], "weight": 5},
               {"id": "g2", "ip": GUESTS["g2"], "enabled": False},
               {"id": "g3", "ip": GUESTS["g3"], "weight": 0}]
    body = await apply(lab, rule(members=members))
    assert "runtime API" in body["services"]["haproxy"], body
    st = await status(lab)
    assert st["services"]["haproxy"]["reloads"] == reloads
    web = st["services"]["haproxy"]["rules"]["web"]["members"]
    assert web["g2"]["status"] == "MAINT" and web["g1"]["weight"] == 5, web
    assert set(await servers_seen(lab, f"http://{LB_IP}/", 6)) == {"g1"}
    await apply(lab, rule())
    assert set(await servers_seen(lab, f"http://{LB_IP}/", 9)) == set(GUESTS)


async def test_reloads_under_load_lose_no_request(lab):
    await apply(lab, rule())
    argv = lab.argv_in("internet", [sys.executable, "-m", "appliances.lab.httpload",
                                    f"http://{LB_IP}/", "--seconds", "30", "--workers", "4"])
    load = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    try:
        await asyncio.sleep(0.5)
        before = (await status(lab))["services"]["haproxy"]["reloads"]
        for k in range(6):  # each adds or removes a listener: a real reload
            extra = [rule("extra", port=90 + k)] if k % 2 == 0 else []
            await apply(lab, rule(), *extra)
            await asyncio.sleep(0.3)
        after = (await status(lab))["services"]["haproxy"]["reloads"]
    finally:
        load.terminate()
        out, _ = await load.communicate()
    result = json.loads(out)
    assert after - before == 6
    assert result["ok"] > 50, result
    assert result["failed"] == 0, result


async def test_tls_termination(lab):
    cert, key = _self_signed("lb.lab.test")
    await apply(lab, rule(protocol="http", port=443, tls={"certificate": cert,
                                                          "private_key": key}))
    ok, body = await fetch(lab, f"https://{LB_IP}/", "-k", src=CLIENT_OK)
    assert ok and f"xff={CLIENT_OK}" in body, body
    pems = list((lab.agent_state_dir() / "haproxy" / "certs").glob("web-*.pem"))
    assert len(pems) == 1 and pems[0].stat().st_mode & 0o777 == 0o600


async def test_refused_certificate_changes_nothing(lab):
    await apply(lab, rule())
    before = await lab.agent().request("GET", "/v1/config")
    bad = _self_signed("x")[0]  # a certificate where the key should be
    base = lab.baseline.model_copy(update={"generation": lab.document.generation})
    reply = await lab.put_config(derive(base, load_balancers=[
        rule(), rule("tls", port=443, protocol="http",
                     tls={"certificate": bad, "private_key": bad})]))
    assert reply.status == 500 and reply.body["service"] == "haproxy", reply
    assert "haproxy -c" in reply.body["message"]
    assert (await lab.agent().request("GET", "/v1/config")).body == before.body
    assert set(await servers_seen(lab, f"http://{LB_IP}/", 6)) == set(GUESTS)


async def test_same_document_changes_nothing_and_no_rules_stop_haproxy(lab):
    await apply(lab, rule())
    doc = lab.document
    again = await lab.apply(doc.model_copy(update={"generation": doc.generation + 1}))
    assert "haproxy" not in again.body["services"], again.body
    await apply(lab)
    st = (await status(lab))["services"]["haproxy"]
    assert not st["daemon"]["running"]
    assert not (await fetch(lab, f"http://{LB_IP}/", timeout=1.0))[0]


def _self_signed(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())
