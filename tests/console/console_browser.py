"""Headless Chromium driven over the DevTools protocol with aiohttp (no extra download),
and a small PNG decoder for its screenshots.

Chromium must not talk to anything but the proxy on loopback: background
services are off and every host name resolves to nothing (literal 127.0.0.1
URLs still work).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-breakpad",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=800,600",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    direct = Path("/usr/lib/chromium/chromium")
    return str(direct) if direct.exists() else shutil.which("chromium")


class Chromium:
    """One headless browser with one page; ``call`` sends a DevTools command."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="skiff-chromium-"))
        self.proc: subprocess.Popen | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        binary = chromium_binary()
        assert binary, "chromium is not installed"
        log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(600):  # up to 60 s: the first start on a cold disk is slow
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.log()}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"chromium did not open DevTools: {self.log()}")
        port = int(port_file.read_text().splitlines()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.profile / "chromium.log").read_text(errors="replace")[-3000:]
        return ""

    async def call(self, method: str, **params: Any) -> dict:
        assert self.ws is not None
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 60)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, tries: int = 300, pause: float = 0.1) -> Any:
        """Evaluate until truthy (bounded: ``tries`` times); returns the value."""
        value = None
        for _ in range(tries):
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(pause)
        raise AssertionError(f"{expression!r} stayed {value!r}")

    async def screenshot(self, clip: dict | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode((await self.call("Page.captureScreenshot", **params))["data"])


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB pixels of an 8-bit RGB/RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack("!I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack("!IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(
            bytes(line)
            if bpp == 3
            else bytes(v for i in range(0, stride, 4) for v in line[i : i + 3])
        )
        prev = line
    return width, height, rows


def dominant_colour(png: bytes) -> tuple[tuple[int, int, int], float]:
    """The most common colour and its share of the pixels."""
    width, height, rows = decode_png(png)
    counts = Counter(row[i : i + 3] for row in rows for i in range(0, width * 3, 3))
    colour, count = counts.most_common(1)[0]
    return (colour[0], colour[1], colour[2]), count / (width * height)
