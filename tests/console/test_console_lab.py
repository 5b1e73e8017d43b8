"""The console role for real: `skiff agent --role console` as its own process, configured
over mutual TLS, bridging to x11vnc serving an Xvfb screen of a known colour (both on
loopback), and noVNC in headless Chromium showing that screen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from console_browser import Chromium, chromium_binary, dominant_colour

from appliances.common import console_token as ct
from appliances.console.proxy import CLOSE_IDLE, STATIC_DIR
from appliances.console.testing import TcpViewer, WsViewer, X11Vnc, free_port, x11_skip_reason
from appliances.lab.agentclient import AgentClient
from appliances.lab.pki import create_lab_pki

REPO = Path(__file__).resolve().parents[2]
AGENT_ID = "cp-lab"
PASSWORD = "vnc-Pw1"
COLOUR = "#3366cc"
CHANGED = "#cc5522"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(x11_skip_reason() is not None, reason=x11_skip_reason() or ""),
]


class ConsoleAgent:
    def __init__(
        self, client: AgentClient, proc: subprocess.Popen, key: bytes, public: str, log: Path
    ):
        self.client, self.proc, self.key, self.public, self.log = client, proc, key, public, log
        self.generation = 1

    def document(self, **extra) -> dict:
        host, port = self.public.split(":")
        return {
            "proxy_id": AGENT_ID,
            "generation": self.generation,
            "token_keys": [ct.encode_key(self.key)],
            "listen": {"address": host, "port": int(port)},
            **extra,
        }

    async def apply(self, **extra) -> None:
        self.generation += 1
        await self.client.apply(self.document(**extra))

    async def status(self) -> dict:
        reply = await self.client.status()
        assert reply.ok, reply
        return reply.body["services"]["console_proxy"]

    def token(self, vnc: X11Vnc, **kw) -> str:
        args = {
            "instance_id": "vm-lab",
            "host": "127.0.0.1",
            "port": vnc.port,
            "password": vnc.password,
            "ttl_s": 120,
        }
        args.update(kw)
        return ct.issue(self.key, **args)[0]

    def ws_url(self, token: str) -> str:
        return f"ws://{self.public}/websockify?token={token}"


@contextlib.asynccontextmanager
async def console_agent(tmp: Path):
    pki = create_lab_pki(tmp / "pki", AGENT_ID, "127.0.0.1")
    api_port, public_port = free_port(), free_port()
    log = tmp / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mgmt.cli",
                "agent",
                "--role",
                "console",
                "--id",
                AGENT_ID,
                "--state-dir",
                str(tmp / "state"),
                "--listen",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--ca",
                str(pki.ca_cert),
                "--cert",
                str(pki.server_cert),
                "--key",
                str(pki.server_key),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    client = AgentClient(f"https://127.0.0.1:{api_port}", AGENT_ID, pki)
    agent = ConsoleAgent(client, proc, ct.new_key(), f"127.0.0.1:{public_port}", log)
    try:
        await client.wait_healthy(60, alive=lambda: proc.poll() is None)
        await client.apply(agent.document())
        yield agent
    except BaseException as exc:
        exc.add_note(f"agent log:\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def x11():
    with X11Vnc(colour=COLOUR, password=PASSWORD) as vnc:
        yield vnc


@pytest.fixture
async def agent(tmp_path):
    async with console_agent(tmp_path) as running:
        yield running


async def _wait_sessions(agent: ConsoleAgent, count: int) -> dict:
    status = {}
    for _ in range(200):  # bounded; the proxy notices a close on its next loop turn
        status = await agent.status()
        if status["activeviewersessions"] == count:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"activeviewersessions stayed {status.get('activeviewersessions')}")


async def _refused(url: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        viewer = await WsViewer.connect(url)
        await viewer.close()
    return info.value.status


async def test_rfb_through_the_agent_to_x11vnc(agent, x11):
    token = agent.token(x11)
    viewer = await WsViewer.connect(agent.ws_url(token))
    try:
        await viewer.handshake(password=None)  # the proxy answered x11vnc's challenge
        assert (viewer.width, viewer.height) == x11.size
        update = await viewer.framebuffer()
        assert update.dominant_colour() == x11.colour_rgb()
        status = await _wait_sessions(agent, 1)
        (session,) = status["sessions"]
        assert session["instance_id"] == "vm-lab" and session["started"]
        assert PASSWORD not in repr(status)
    finally:
        await viewer.close()
    await _wait_sessions(agent, 0)
    assert await _refused(agent.ws_url(token)) == 403  # used once


async def test_tampered_expired_and_other_key_tokens_never_reach_x11vnc(agent, x11):
    good = agent.token(x11)
    tampered = good[:30] + ("A" if good[30] != "A" else "B") + good[31:]
    expired = agent.token(x11, now=1_000_000.0)
    other = ct.issue(
        ct.new_key(), instance_id="vm-other", host="127.0.0.1", port=x11.port, password=PASSWORD
    )[0]
    for token in (tampered, expired, other):
        assert await _refused(agent.ws_url(token)) == 403
    counters = (await agent.status())["counters"]
    assert counters.get("refused_invalid") == 2 and counters.get("refused_expired") == 1
    assert "accepted" not in counters


async def test_idle_timeout_through_the_agent(agent, x11):
    await agent.apply(idle_timeout_s=1)
    viewer = await WsViewer.connect(agent.ws_url(agent.token(x11)))
    try:
        await viewer.handshake()
        await viewer.framebuffer()  # then a still screen: nothing moves either way
        assert await asyncio.wait_for(viewer.wait_closed(), 60) == CLOSE_IDLE
    finally:
        await viewer.close()
    await _wait_sessions(agent, 0)


@pytest.mark.slow
@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed")
@pytest.mark.skipif(
    not (STATIC_DIR / "novnc" / "core" / "rfb.js").exists(),
    reason="noVNC is not vendored (make novnc)",
)
async def test_novnc_in_chromium_shows_the_instance_screen(agent, x11, tmp_path):
    direct = await TcpViewer.connect("127.0.0.1", x11.port)
    try:
        await direct.handshake(password=PASSWORD)
        expected = (await direct.framebuffer()).dominant_colour()
    finally:
        await direct.close()
    token = agent.token(x11, instance_id="vm-browser")
    async with Chromium() as browser:
        await browser.call("Page.enable")
        await browser.call("Page.navigate", url=f"http://{agent.public}/?token={token}")
        state = "window.skiffConsole && window.skiffConsole.state"
        assert await browser.wait_for(f"({state}) !== 'loading' && ({state})") in (
            "connecting",
            "connected",
        )
        await browser.wait_for(f"({state}) === 'connected'")
        rect = await browser.wait_for(
            "(() => { const c = document.querySelector('#screen canvas');"
            " if (!c || !c.width) return null; const r = c.getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )
        await _canvas_shows(browser, rect, expected, tmp_path / "canvas.png")
        # The screen changes on the instance: the page follows (a live bridge, not a still).
        x11.set_colour(CHANGED)
        try:
            await _canvas_shows(browser, rect, x11.colour_rgb(), tmp_path / "changed.png")
        finally:
            x11.set_colour(COLOUR)
        assert "token" not in await browser.evaluate("location.href")
        status = await _wait_sessions(agent, 1)
        assert status["sessions"][0]["instance_id"] == "vm-browser"

        # The same link opened again (another tab, a reload) is refused.
        await browser.call("Page.navigate", url=f"http://{agent.public}/?token={token}")
        await browser.wait_for(f"({state}) === 'disconnected'")
        assert await browser.evaluate("window.skiffConsole.reason") == "error"
    assert (await agent.status())["counters"].get("refused_reused") == 1


async def _canvas_shows(
    browser: Chromium, rect: dict, expected: tuple[int, int, int], keep: Path
) -> None:
    colour, share, png = (0, 0, 0), 0.0, b""
    for _ in range(150):  # bounded: until noVNC has painted the update
        png = await browser.screenshot(rect)
        colour, share = dominant_colour(png)
        if _near(colour, expected) and share > 0.95:
            break
        await asyncio.sleep(0.1)
    keep.write_bytes(png)
    assert _near(colour, expected), f"the canvas shows {colour}, the VNC server {expected}"
    assert share > 0.95, f"only {share:.0%} of the canvas is {colour}"


def _near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 8) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))
