"""The console proxy service on loopback, with a fake VNC server in the same process:
tokens, the RFB handshake on the viewer's behalf, idle timeout, limits, status."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import aiohttp
import pytest

from appliances.agent.service import AgentContext
from appliances.common import certs
from appliances.common import console_token as ct
from appliances.common.errors import ApplyError, DocumentError
from appliances.console.document import ConsoleParser
from appliances.console.proxy import CLOSE_IDLE, CLOSE_UPSTREAM
from appliances.console.service import ConsoleProxyService
from appliances.console.testing import FakeVncServer, WsViewer

PASSWORD = "s3cret-pw"
BLUE = (51, 102, 204)


def document(keys: list[bytes], generation: int = 1, **extra):
    raw = {
        "proxy_id": "cp-1",
        "generation": generation,
        "token_keys": [ct.encode_key(k) for k in keys],
        "listen": {"address": "127.0.0.1", "port": 8080},
        **extra,
    }
    return ConsoleParser().parse(raw)


async def apply(service: ConsoleProxyService, doc) -> bool:
    change = await service.prepare(doc)
    if change.changed:
        await service.check(change)
        await service.commit(change)
    return change.changed


@pytest.fixture
def key() -> bytes:
    return ct.new_key()


@pytest.fixture
async def proxy(tmp_path, key):
    service = ConsoleProxyService(AgentContext("cp-1", tmp_path, 0), port=0)
    await apply(service, document([key]))
    yield service
    await service.stop()


@pytest.fixture
async def vnc():
    async with FakeVncServer(password=PASSWORD, colour=BLUE) as server:
        yield server


def url(proxy: ConsoleProxyService, token: str) -> str:
    return f"ws://{proxy.listening()}/websockify?token={token}"


def token_for(key: bytes, vnc: FakeVncServer, **kw) -> str:
    args = {
        "instance_id": "vm-1",
        "host": "127.0.0.1",
        "port": vnc.port,
        "password": PASSWORD,
        "ttl_s": 60,
    }
    args.update(kw)
    return ct.issue(key, **args)[0]


async def refused(proxy, token: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        viewer = await WsViewer.connect(url(proxy, token))
        await viewer.close()
    return info.value.status


async def test_a_viewer_sees_the_screen_without_knowing_the_password(proxy, vnc, key):
    viewer = await WsViewer.connect(url(proxy, token_for(key, vnc)))
    try:
        await viewer.handshake(password=None)  # the proxy offers None
        assert (viewer.width, viewer.height, viewer.name) == (64, 48, "fake-vnc")
        update = await viewer.framebuffer()
        assert update.dominant_colour() == BLUE
        assert vnc.auth_failures == 0
    finally:
        await viewer.close()


async def test_a_token_is_used_once(proxy, vnc, key):
    token = token_for(key, vnc)
    viewer = await WsViewer.connect(url(proxy, token))
    await viewer.handshake()
    await viewer.close()
    assert await refused(proxy, token) == 403
    assert proxy.proxy.counters["refused_reused"] == 1
    assert vnc.connections == 1


async def test_a_plain_get_does_not_use_the_token_up(proxy, vnc, key):
    token = token_for(key, vnc)
    page = f"http://{proxy.listening()}/websockify?token={token}"
    async with aiohttp.ClientSession() as session, session.get(page) as r:
        assert r.status == 400
    viewer = await WsViewer.connect(url(proxy, token))
    await viewer.handshake()
    await viewer.close()


async def test_tampered_expired_and_foreign_tokens_are_refused(proxy, vnc, key):
    good = token_for(key, vnc)
    tampered = good[:40] + ("A" if good[40] != "A" else "B") + good[41:]
    expired = token_for(key, vnc, now=1_000_000.0)
    foreign = token_for(ct.new_key(), vnc)
    for token in (tampered, expired, foreign, "", "garbage"):
        assert await refused(proxy, token) == 403
    counters = proxy.proxy.counters
    assert counters["refused_invalid"] == 4 and counters["refused_expired"] == 1
    assert vnc.connections == 0


async def test_idle_sessions_are_closed(proxy, vnc, key):
    await apply(proxy, document([key], generation=2, idle_timeout_s=1))
    viewer = await WsViewer.connect(url(proxy, token_for(key, vnc)))
    try:
        await viewer.handshake()
        await viewer.framebuffer()
        code = await asyncio.wait_for(viewer.wait_closed(), 30)
        assert code == CLOSE_IDLE
        assert proxy.proxy.counters["ended_idle"] == 1
    finally:
        await viewer.close()


async def test_status_counts_sessions_by_instance(proxy, vnc, key):
    viewers = []
    try:
        for instance in ("vm-1", "vm-2"):
            viewer = await WsViewer.connect(url(proxy, token_for(key, vnc, instance_id=instance)))
            await viewer.handshake()
            viewers.append(viewer)
        status = proxy.status()
        assert status["activeviewersessions"] == 2
        assert sorted(s["instance_id"] for s in status["sessions"]) == ["vm-1", "vm-2"]
        assert all(s["started"] and s["state"] == "bridging" for s in status["sessions"])
        assert PASSWORD not in repr(status)
    finally:
        for viewer in viewers:
            await viewer.close()
    for _ in range(100):  # the proxy notices the closes on its own loop turn
        if not proxy.status()["activeviewersessions"]:
            break
        await asyncio.sleep(0.05)
    assert proxy.status()["activeviewersessions"] == 0


async def test_the_session_limit_refuses_without_using_the_token(proxy, vnc, key):
    await apply(proxy, document([key], generation=2, session_limit=1))
    first = await WsViewer.connect(url(proxy, token_for(key, vnc)))
    await first.handshake()
    waiting = token_for(key, vnc)
    try:
        assert await refused(proxy, waiting) == 503
    finally:
        await first.close()
    for _ in range(100):
        if not proxy.status()["activeviewersessions"]:
            break
        await asyncio.sleep(0.05)
    second = await WsViewer.connect(url(proxy, waiting))
    await second.handshake()
    await second.close()


async def test_a_wrong_vnc_password_closes_the_session(proxy, vnc, key):
    viewer = await WsViewer.connect(url(proxy, token_for(key, vnc, password="wrong")))
    try:
        assert await asyncio.wait_for(viewer.wait_closed(), 30) == CLOSE_UPSTREAM
        assert vnc.auth_failures == 1
        assert proxy.proxy.counters["upstream_failed"] == 1
    finally:
        await viewer.close()


async def test_an_unreachable_vnc_server_closes_the_session(proxy, key):
    async with FakeVncServer() as gone:
        port = gone.port
    token = ct.issue(key, instance_id="vm-1", host="127.0.0.1", port=port, ttl_s=60)[0]
    viewer = await WsViewer.connect(url(proxy, token))
    try:
        assert await asyncio.wait_for(viewer.wait_closed(), 30) == CLOSE_UPSTREAM
    finally:
        await viewer.close()


async def test_without_a_password_the_handshake_passes_through(proxy, key):
    async with FakeVncServer(password="asked-by-viewer") as vnc:
        token = token_for(key, vnc, password=None)
        viewer = await WsViewer.connect(url(proxy, token))
        try:
            await viewer.handshake(password="asked-by-viewer")
            assert (await viewer.framebuffer()).dominant_colour() == BLUE
        finally:
            await viewer.close()


async def test_key_rotation_accepts_current_and_previous(proxy, vnc, key):
    new = ct.new_key()
    await apply(proxy, document([new, key], generation=2))
    for k in (new, key):
        viewer = await WsViewer.connect(url(proxy, token_for(k, vnc)))
        await viewer.handshake()
        await viewer.close()
    await apply(proxy, document([new], generation=3))
    assert await refused(proxy, token_for(key, vnc)) == 403


async def test_a_new_port_keeps_running_sessions(proxy, vnc, key, tmp_path):
    viewer = await WsViewer.connect(url(proxy, token_for(key, vnc)))
    await viewer.handshake()
    old = proxy.listening()
    proxy.port_override = None
    port = _free_port()
    assert await apply(
        proxy, document([key], generation=2, listen={"address": "127.0.0.1", "port": port})
    )
    assert proxy.listening() == f"127.0.0.1:{port}"
    assert old != proxy.listening()
    try:
        assert (await viewer.framebuffer()).dominant_colour() == BLUE
    finally:
        await viewer.close()


async def test_the_page_is_served_with_a_strict_policy(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{proxy.listening()}/?token=abc") as resp:
            assert resp.status == 200
            assert "static/console.js" in await resp.text()
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        async with session.get(f"http://{proxy.listening()}/static/console.js") as resp:
            assert resp.status == 200 and "javascript" in resp.content_type
        async with session.get(f"http://{proxy.listening()}/static/../document.py") as resp:
            assert resp.status in (403, 404)


def _server_pem(name: str = "console.lab") -> tuple[str, str, str]:
    """CA certificate, server certificate and key (PEM) for 127.0.0.1 and ``name``."""
    day = datetime.timedelta(days=1)
    ca_key, ca_cert = certs.make_ca("console test CA", day)
    key, cert = certs.issue(
        name, ca_cert, ca_key, certs.SERVER, certs.server_sans(name, "127.0.0.1"), day
    )
    return (
        certs.cert_pem(ca_cert).decode(),
        certs.cert_pem(cert).decode(),
        certs.key_pem(key).decode(),
    )


async def test_tls_on_the_public_side(proxy, vnc, key):
    ca, cert, private = _server_pem()
    assert await apply(proxy, document([key], 2, tls={"certificate": cert, "key": private}))
    assert proxy.status()["tls"] is True
    client_ctx = ssl.create_default_context(cadata=ca)
    token = token_for(key, vnc)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://{proxy.listening()}/", ssl=client_ctx) as resp:
            assert resp.status == 200
        ws = await session.ws_connect(
            f"wss://{proxy.listening()}/websockify?token={token}",
            ssl=client_ctx,
            protocols=("binary",),
        )
        viewer = WsViewer(session, ws)
        await viewer.handshake()
        assert (await viewer.framebuffer()).dominant_colour() == BLUE
        await ws.close()
    key_files = list(proxy.tls_dir.iterdir())
    assert [oct(p.stat().st_mode & 0o777) for p in key_files] == ["0o600"]


async def test_a_certificate_that_does_not_match_its_key_is_refused(proxy, key):
    _, cert, _ = _server_pem()
    _, _, other_key = _server_pem()
    before = proxy.listening()
    change = await proxy.prepare(document([key], 2, tls={"certificate": cert, "key": other_key}))
    with pytest.raises(ApplyError, match="does not load"):
        await proxy.check(change)
    assert proxy.listening() == before and proxy.status()["tls"] is False


def test_the_document_rejects_bad_keys_without_quoting_them():
    bad = ct.encode_key(b"k" * 31)
    with pytest.raises(DocumentError) as info:
        ConsoleParser().parse({"proxy_id": "cp-1", "generation": 1, "token_keys": [bad]})
    assert bad not in str(info.value)
    assert "token_keys.0" in str(info.value)
    with pytest.raises(DocumentError):
        ConsoleParser().parse({"proxy_id": "cp-1", "generation": 1, "token_keys": []})
    with pytest.raises(DocumentError):
        keys = [ct.encode_key(ct.new_key()) for _ in range(3)]
        ConsoleParser().parse({"proxy_id": "cp-1", "generation": 1, "token_keys": keys})


def _free_port() -> int:
    from appliances.console.testing import free_port

    return free_port()
