"""The console proxy's public side: the noVNC page and a websocket per session.

``GET /?token=...`` serves the launcher page (noVNC, vendored at build time);
``GET /websockify?token=...`` opens the token, and only then connects to the
VNC server the token names. Refusals happen before the websocket upgrade with
an HTTP status, so a refused token costs no connection to any host:

- 400: not a websocket request (does not use the token up);
- 403: invalid, expired or already used token;
- 503: the session limit is reached (the token stays usable).

A session ends when either side closes, after ``idle_timeout_s`` with no bytes
in either direction (close code 4000), or when the VNC server cannot be reached
or refuses the proxy's authentication (close code 1011).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from appliances.common.console_token import ConsoleGrant, TokenError, TokenExpired, open_token
from appliances.console import rfb
from appliances.console.sessions import NonceStore, Session

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
NOVNC_SUBDIR = "novnc"
CLOSE_IDLE = 4000
CLOSE_UPSTREAM = WSCloseCode.INTERNAL_ERROR  # 1011
READ_CHUNK = 64 * 1024
MAX_VIEWER_MESSAGE = 1 << 20  # viewer messages are small (keys, pointer, clipboard)
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class ProxySettings:
    """What the applied document says about serving (see ConsoleDocument)."""

    keys: tuple[bytes, ...]
    idle_timeout_s: float
    session_limit: int
    connect_timeout_s: float


class WsReader(rfb.ByteSource):
    """Byte-stream reads over a websocket's binary messages (for the handshake)."""

    def __init__(self, ws: web.WebSocketResponse, session: Session):
        self.ws = ws
        self.session = session
        self.buf = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive()
            if msg.type != WSMsgType.BINARY:
                raise rfb.RfbError(f"the viewer sent {msg.type.name} during the handshake")
            self.buf += msg.data
            self.session.bytes_from_viewer += len(msg.data)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def leftover(self) -> bytes:
        out, self.buf = bytes(self.buf), bytearray()
        return out


class ConsoleProxy:
    """Sessions, tokens and the aiohttp application; the service owns the listener."""

    def __init__(self, static_dir: Path = STATIC_DIR, event: Callable[[str], None] | None = None):
        self.static_dir = static_dir
        self.settings: ProxySettings | None = None
        self.nonces = NonceStore()
        self.sessions: dict[str, Session] = {}  # by token nonce (unique once claimed)
        self.counters: Counter[str] = Counter()
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._event = event or (lambda text: None)

    # -- the application -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/vnc.html", self.index)
        app.router.add_get("/websockify", self.websocket)
        app.router.add_static("/static/", self.static_dir, follow_symlinks=False)
        app.on_response_prepare.append(_security_headers)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        resp = web.FileResponse(self.static_dir / "index.html")
        resp.headers["Cache-Control"] = "no-store"  # the URL carries a token
        return resp

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        if settings is None:
            return web.Response(status=503, text="the console proxy has no configuration yet")
        ws = web.WebSocketResponse(
            protocols=("binary",), max_msg_size=MAX_VIEWER_MESSAGE, compress=False
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="a websocket upgrade is expected here")
        try:
            grant = open_token(request.query.get("token", ""), settings.keys)
        except TokenError as exc:
            kind = "expired" if isinstance(exc, TokenExpired) else "invalid"
            return self._refuse(request, f"refused_{kind}", 403, exc.reason, str(exc))
        if len(self.sessions) >= settings.session_limit:
            return self._refuse(
                request, "refused_limit", 503, "session limit reached", grant.instance_id
            )
        if not self.nonces.claim(grant.nonce, grant.expires):
            return self._refuse(
                request, "refused_reused", 403, "token already used", grant.instance_id
            )
        session = Session(
            session_id=grant.session_id,
            instance_id=grant.instance_id,
            client=request.remote or "?",
            target=f"{grant.host}:{grant.port}",
            started_mono=time.monotonic(),
        )
        # Counted from here, so handshakes in flight count against the limit too.
        self.sessions[grant.nonce] = session
        self._sockets[grant.nonce] = ws
        try:
            await ws.prepare(request)
            self.counters["accepted"] += 1
            self._event(
                f"session {session.session_id} for {session.instance_id} from {session.client}"
            )
            await self._serve(ws, session, grant, settings)
        finally:
            self.sessions.pop(grant.nonce, None)
            self._sockets.pop(grant.nonce, None)
            if ws.prepared and not ws.closed:
                await ws.close()
        return ws

    def _refuse(
        self, request: web.Request, counter: str, status: int, reason: str, detail: str
    ) -> web.Response:
        self.counters[counter] += 1
        log.info("refused a console session from %s: %s", request.remote, detail)
        return web.Response(status=status, text=reason)

    # -- one session ---------------------------------------------------------------------

    async def _serve(
        self,
        ws: web.WebSocketResponse,
        session: Session,
        grant: ConsoleGrant,
        settings: ProxySettings,
    ) -> None:
        reader = WsReader(ws, session)

        async def send(data: bytes) -> None:
            session.bytes_to_viewer += len(data)
            await ws.send_bytes(data)

        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                up_r, up_w = await asyncio.open_connection(grant.host, grant.port)
        except (OSError, TimeoutError) as exc:
            await self._upstream_failed(ws, session, f"cannot connect to {session.target}: {exc}")
            return
        try:
            if grant.password is not None:
                failures = (rfb.RfbError, OSError, TimeoutError, asyncio.IncompleteReadError)
                try:
                    async with asyncio.timeout(settings.connect_timeout_s):
                        await rfb.authenticate_upstream(up_r, up_w, grant.password)
                except failures as exc:
                    await self._upstream_failed(ws, session, f"handshake: {exc}")
                    return
                try:
                    async with asyncio.timeout(settings.connect_timeout_s):
                        await rfb.greet_viewer(reader, send)
                except failures as exc:
                    self.counters["viewer_failed"] += 1
                    self._event(f"session {session.session_id}: viewer handshake: {exc}")
                    await ws.close(code=WSCloseCode.PROTOCOL_ERROR, message=b"RFB handshake")
                    return
                leftover = reader.leftover()
                if leftover:
                    up_w.write(leftover)
            session.state = "bridging"
            ended = await self._bridge(ws, session, up_r, up_w, send)
        finally:
            up_w.close()
            with contextlib.suppress(Exception):
                await up_w.wait_closed()
        session.state = "closing"
        self.counters[f"ended_{ended}"] += 1
        self._event(f"session {session.session_id} ended: {ended}")
        if ended == "idle":
            await ws.close(code=CLOSE_IDLE, message=b"idle timeout")
        elif ended == "server":
            await ws.close(code=WSCloseCode.OK, message=b"the console closed")

    async def _upstream_failed(self, ws: web.WebSocketResponse, session: Session, why: str):
        self.counters["upstream_failed"] += 1
        self._event(f"session {session.session_id} for {session.instance_id}: {why}")
        log.warning("console session %s: %s", session.session_id, why)
        await ws.close(code=CLOSE_UPSTREAM, message=b"cannot reach the instance's console")

    async def _bridge(
        self,
        ws: web.WebSocketResponse,
        session: Session,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
        send: Callable,
    ) -> str:
        """Copy both ways until one side ends or the session idles; says which."""

        async def from_viewer() -> str:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    return "viewer"  # websockify's base64 text mode is not offered
                session.last_activity = time.monotonic()
                session.bytes_from_viewer += len(msg.data)
                up_w.write(msg.data)
                await up_w.drain()
            return "viewer"

        async def to_viewer() -> str:
            while data := await up_r.read(READ_CHUNK):
                session.last_activity = time.monotonic()
                await send(data)
            return "server"

        async def idle() -> str:
            while True:
                settings = self.settings  # a new document applies to running sessions
                timeout = settings.idle_timeout_s if settings else 0
                remaining = session.last_activity + timeout - time.monotonic()
                if remaining <= 0:
                    return "idle"
                await asyncio.sleep(remaining)

        tasks = [asyncio.create_task(f()) for f in (from_viewer, to_viewer, idle)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(iter(done))
        if first.cancelled() or first.exception() is not None:
            return "error"
        return first.result()

    # -- life cycle and status -----------------------------------------------------------

    async def close_all(self, reason: bytes = b"the console proxy is stopping") -> None:
        for ws in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=reason)

    def novnc_version(self) -> str | None:
        try:
            meta = json.loads((self.static_dir / NOVNC_SUBDIR / "package.json").read_text())
        except (OSError, ValueError):
            return None
        return str(meta.get("version"))

    def status(self) -> dict:
        now = time.monotonic()
        return {
            "activeviewersessions": len(self.sessions),
            "sessions": [s.as_status(now) for s in self.sessions.values()],
            "counters": dict(self.counters),
            "used_tokens_remembered": len(self.nonces),
            "novnc": self.novnc_version(),
        }


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse):
        return
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # URLs carry tokens
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", _CSP)
