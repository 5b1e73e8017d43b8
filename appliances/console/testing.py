"""Test and benchmark helpers for the console proxy: an RFB viewer, a fake VNC server,
and a real one (Xvfb showing a solid colour, served by x11vnc).

    async with FakeVncServer(password="pw") as vnc:       # loopback, in this process
        ...
    with X11Vnc(colour="#3366cc", password="pw") as vnc:   # real daemons, loopback only
        ...
    viewer = await WsViewer.connect(f"ws://{proxy}/websockify?token={token}")
    await viewer.handshake()            # the proxy offers None after doing VNC auth
    update = await viewer.framebuffer() # a full, raw, 32-bit update
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from appliances.console import rfb

#: 32 bits per pixel, depth 24, little-endian, true colour, 8 bits a channel: B G R X.
PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
ENCODING_RAW = 0


@dataclass
class Update:
    """A framebuffer update: its rectangles' raw pixels (B, G, R, X per pixel)."""

    rects: list[tuple[int, int, int, int, bytes]]

    def dominant_colour(self) -> tuple[int, int, int]:
        counts: Counter[bytes] = Counter()
        for _x, _y, _w, _h, pixels in self.rects:
            counts.update(pixels[i : i + 3] for i in range(0, len(pixels), 4 * 7))
        b, g, r = counts.most_common(1)[0][0]
        return r, g, b


class _Viewer:
    """The client half of RFB, enough to see a screen. Subclasses move the bytes."""

    width = height = 0
    name = ""

    async def readexactly(self, n: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    async def send(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def handshake(self, password: str | None = None) -> None:
        """Version, security (None, or VNC auth with ``password``), ClientInit, ServerInit."""
        rfb.parse_version(await self.readexactly(12))
        await self.send(b"RFB 003.008\n")
        count = (await self.readexactly(1))[0]
        if count == 0:
            raise rfb.RfbError("refused by the server")
        offered = set(await self.readexactly(count))
        if password is not None and rfb.SEC_VNC_AUTH in offered:
            await self.send(bytes([rfb.SEC_VNC_AUTH]))
            await self.send(rfb.vnc_auth_response(password, await self.readexactly(16)))
        elif rfb.SEC_NONE in offered:
            await self.send(bytes([rfb.SEC_NONE]))
        else:
            raise rfb.RfbError(f"no usable security type in {sorted(offered)}")
        (result,) = struct.unpack("!I", await self.readexactly(4))
        if result != 0:
            raise rfb.RfbError("security handshake failed")
        await self.send(b"\x01")  # ClientInit: shared
        self.width, self.height = struct.unpack("!HH", await self.readexactly(4))
        await self.readexactly(16)  # the server's pixel format; we set ours next
        (length,) = struct.unpack("!I", await self.readexactly(4))
        self.name = (await self.readexactly(length)).decode(errors="replace")
        await self.send(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
        await self.send(struct.pack("!BxHi", 2, 1, ENCODING_RAW))

    async def request(self, incremental: bool = False) -> None:
        await self.send(struct.pack("!BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    async def next_update(self) -> Update:
        """The next FramebufferUpdate, skipping bells, clipboard and colour maps."""
        while True:
            kind = (await self.readexactly(1))[0]
            if kind == 0:
                break
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                await self.readexactly(3)
                (n,) = struct.unpack("!I", await self.readexactly(4))
                await self.readexactly(n)
            elif kind == 1:  # SetColourMapEntries
                _, _, n = struct.unpack("!BHH", await self.readexactly(5))
                await self.readexactly(6 * n)
            else:
                raise rfb.RfbError(f"unexpected server message {kind}")
        _, count = struct.unpack("!BH", await self.readexactly(3))
        rects = []
        for _ in range(count):
            x, y, w, h, enc = struct.unpack("!HHHHi", await self.readexactly(12))
            if enc != ENCODING_RAW:
                raise rfb.RfbError(f"unexpected encoding {enc}")
            rects.append((x, y, w, h, await self.readexactly(w * h * 4)))
        return Update(rects)

    async def framebuffer(self) -> Update:
        await self.request(incremental=False)
        return await self.next_update()


class WsViewer(_Viewer):
    """A viewer through the proxy's websocket, as noVNC connects."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.buf = bytearray()

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> WsViewer:
        """Raises aiohttp.WSServerHandshakeError (with .status) when the proxy refuses."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=timeout))
        try:
            ws = await session.ws_connect(url, protocols=("binary",), max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"websocket {msg.type.name} (code {self.ws.close_code})")
            self.buf += msg.data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def wait_closed(self) -> int | None:
        """Read until the proxy closes; returns its close code."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


class TcpViewer(_Viewer):
    """A viewer straight to a VNC server (the baseline)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> TcpViewer:
        return cls(*await asyncio.open_connection(host, port))

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class FakeVncServer:
    """A small RFB 3.8 server on loopback: a solid-colour screen, VNC auth when it has
    a password. With ``push_hz`` it also pushes a small update at that rate whose
    first 8 pixel bytes carry time.monotonic_ns() (for latency measurements)."""

    def __init__(
        self,
        *,
        password: str | None = None,
        colour: tuple[int, int, int] = (51, 102, 204),
        size: tuple[int, int] = (64, 48),
        push_hz: float = 0.0,
        push_size: tuple[int, int] = (32, 32),
    ):
        self.password = password
        self.colour = colour
        self.size = size
        self.push_hz = push_hz
        self.push_size = push_size
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.auth_failures = 0
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> FakeVncServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pixels(self, w: int, h: int) -> bytes:
        r, g, b = self.colour
        return bytes((b, g, r, 0)) * (w * h)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        kind = rfb.SEC_VNC_AUTH if self.password is not None else rfb.SEC_NONE
        writer.write(bytes([1, kind]))
        if (await reader.readexactly(1))[0] != kind:
            return
        if self.password is not None:
            challenge = os.urandom(16)
            writer.write(challenge)
            response = await reader.readexactly(16)
            if response != rfb.vnc_auth_response(self.password, challenge):
                self.auth_failures += 1
                reason = b"wrong password"
                writer.write(struct.pack("!II", 1, len(reason)) + reason)
                await writer.drain()
                return
        writer.write(struct.pack("!I", 0))
        await reader.readexactly(1)  # ClientInit
        w, h = self.size
        name = b"fake-vnc"
        writer.write(struct.pack("!HH", w, h) + PIXEL_FORMAT + struct.pack("!I", len(name)) + name)
        await writer.drain()
        pusher = asyncio.create_task(self._push(writer)) if self.push_hz else None
        try:
            await self._serve_requests(reader, writer)
        finally:
            if pusher is not None:
                pusher.cancel()

    async def _serve_requests(self, reader, writer) -> None:
        sizes = {0: 19, 2: None, 3: 9, 4: 7, 5: 5, 6: None}
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 2:
                _, n = struct.unpack("!BH", await reader.readexactly(3))
                await reader.readexactly(4 * n)
            elif kind == 6:
                await reader.readexactly(3)
                (n,) = struct.unpack("!I", await reader.readexactly(4))
                await reader.readexactly(n)
            elif kind in sizes:
                body = await reader.readexactly(sizes[kind])
                if kind == 3 and not self.push_hz:
                    w, h = self.size
                    writer.write(struct.pack("!BxHHHHHi", 0, 1, 0, 0, w, h, ENCODING_RAW))
                    writer.write(self._pixels(w, h))
                    await writer.drain()
                del body
            else:
                return

    async def _push(self, writer: asyncio.StreamWriter) -> None:
        w, h = self.push_size
        filler = self._pixels(w, h)[8:]
        head = struct.pack("!BxHHHHHi", 0, 1, 0, 0, w, h, ENCODING_RAW)
        interval = 1.0 / self.push_hz
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            writer.write(head + struct.pack("<Q", time.monotonic_ns()) + filler)
            await writer.drain()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


X11_TOOLS = ("Xvfb", "x11vnc", "xsetroot")


def x11_skip_reason() -> str | None:
    missing = [t for t in X11_TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (make deps installs them)" if missing else None


class X11Vnc:
    """Xvfb with a solid root window, served by x11vnc on loopback (or on ``listen`` and
    ``port``: the lab's VNC displays of instances, appliances.lab.vncserver). With
    ``passwdfile`` x11vnc reads the password from that file, never from its argv."""

    def __init__(
        self,
        colour: str = "#3366cc",
        password: str | None = None,
        size: tuple[int, int] = (320, 240),
        *,
        listen: str = "127.0.0.1",
        port: int = 0,
        passwdfile: Path | None = None,
    ):
        self.colour = colour
        self.password = password
        self.size = size
        self.listen = listen
        self.want_port = port
        self.passwdfile = passwdfile
        self.port = 0
        self.display = ""
        self.dir = Path(tempfile.mkdtemp(prefix="skiff-x11vnc-"))
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> X11Vnc:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        log = open(self.dir / "x.log", "wb")  # noqa: SIM115 - the children keep it
        xvfb = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                "1",
                "-screen",
                "0",
                f"{self.size[0]}x{self.size[1]}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(xvfb)
        assert xvfb.stdout is not None
        number = xvfb.stdout.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start; see {self.dir / 'x.log'}")
        self.display = f":{number.decode()}"
        env = {**os.environ, "DISPLAY": self.display}
        subprocess.run(
            ["xsetroot", "-solid", self.colour], env=env, check=True, stdout=log, stderr=log
        )
        self.port = self.want_port or free_port()
        args = [
            "x11vnc",
            "-display",
            self.display,
            "-rfbport",
            str(self.port),
            "-listen",
            self.listen,
            "-noipv6",
            "-forever",
            "-shared",
            "-noxdamage",
            "-nocursor",
            "-quiet",
            "-nopw",
        ]
        if self.password is not None:
            passfile = self.dir / "passwd"
            subprocess.run(
                ["x11vnc", "-storepasswd", self.password, str(passfile)],
                check=True,
                stdout=log,
                stderr=log,
            )
            args = [a for a in args if a != "-nopw"] + ["-rfbauth", str(passfile)]
        elif self.passwdfile is not None:
            args = [a for a in args if a != "-nopw"] + ["-passwdfile", str(self.passwdfile)]
        vnc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(vnc)
        log.close()
        _wait_port(self.listen, self.port, vnc, self.dir / "x.log")

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def set_colour(self, colour: str) -> None:
        """Paint the root window anew (x11vnc sees the change and sends it)."""
        env = {**os.environ, "DISPLAY": self.display}
        subprocess.run(["xsetroot", "-solid", colour], env=env, check=True, capture_output=True)
        self.colour = colour

    def colour_rgb(self) -> tuple[int, int, int]:
        text = self.colour.lstrip("#")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _wait_port(host: str, port: int, proc: subprocess.Popen, log: Path, tries: int = 200) -> None:
    """Until something accepts on host:port (bounded: ``tries`` x 50 ms)."""
    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}: {log.read_text()[-2000:]}")
