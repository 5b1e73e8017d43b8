"""The console proxy as an agent service: one listener, settings swapped on commit.

A new document swaps the keys and limits in place (running sessions go on, and
a shorter idle timeout applies to them too). A new address or port binds the
new listener before the old one stops listening; sessions already bridged are
not cut, since they live on their own connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from appliances.agent.service import AgentContext, Change, Service
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write
from appliances.console.document import ConsoleDocument, Tls
from appliances.console.proxy import STATIC_DIR, ConsoleProxy, ProxySettings

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    tls_digest: str | None  # of certificate and key; None: plain HTTP

    def __str__(self) -> str:
        scheme = "https" if self.tls_digest else "http"
        return f"{scheme}://{self.address}:{self.port}"


def settings_of(doc: ConsoleDocument) -> ProxySettings:
    return ProxySettings(
        keys=doc.keys(),
        idle_timeout_s=doc.idle_timeout_s,
        session_limit=doc.session_limit,
        connect_timeout_s=doc.connect_timeout_s,
    )


class ConsoleProxyService(Service):
    name = "console_proxy"

    def __init__(
        self, ctx: AgentContext, *, static_dir: Path = STATIC_DIR, port: int | None = None
    ):
        """``port`` overrides the document's (tests pass 0 for any free port)."""
        super().__init__(ctx)
        self.proxy = ConsoleProxy(static_dir, self.state.event)
        self.port_override = port
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._sock: socket.socket | None = None
        self._bound: Listener | None = None
        self.tls_dir = ctx.state_dir / "console_tls"

    # -- the contract --------------------------------------------------------------------

    async def prepare(self, doc: ConsoleDocument) -> Change:
        settings = settings_of(doc)
        port = doc.listen.port if self.port_override is None else self.port_override
        listener = Listener(doc.listen.address, port, _digest(doc.tls))
        same_listener = self._bound is not None and self._bound == listener
        if settings == self.proxy.settings and same_listener:
            return Change(self.name, False, "unchanged")
        parts = [] if same_listener else [f"listen on {listener}"]
        if settings != self.proxy.settings:
            parts.append(
                f"{len(settings.keys)} token key(s), idle timeout {settings.idle_timeout_s} s, "
                f"limit {settings.session_limit} sessions"
            )
        return Change(self.name, True, "; ".join(parts), (settings, listener, doc.tls))

    async def check(self, change: Change) -> None:
        """A certificate that does not load or match its key is refused before any swap."""
        _settings, listener, tls = change.data
        if tls is not None and listener != self._bound:
            self._tls_context(tls, listener.tls_digest)

    async def commit(self, change: Change) -> None:
        settings, listener, tls = change.data
        if self._bound != listener:
            ctx = self._tls_context(tls, listener.tls_digest) if tls is not None else None
            await self._listen(listener, ctx)
        self.proxy.settings = settings

    async def withdraw(self) -> None:
        await self.stop()
        self.proxy.settings = None

    async def stop(self) -> None:
        await self.proxy.close_all()
        await self._stop_site()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    def status(self) -> dict:
        return {
            **super().status(),
            "listening": self.listening(),
            "tls": bool(self._bound and self._bound.tls_digest),
            **self.proxy.status(),
        }

    def listening(self) -> str | None:
        """host:port of the public listener."""
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    # -- internals -----------------------------------------------------------------------

    def _tls_context(self, tls: Tls, digest: str | None) -> ssl.SSLContext:
        """The server context; certificate and key go to one file (0600) per content,
        since ssl loads them from files only."""
        path = self.tls_dir / f"{digest}.pem"
        if not path.exists():
            atomic_write(path, tls.certificate.strip() + "\n" + tls.key.strip() + "\n", 0o600)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(path)
        except (ssl.SSLError, ValueError) as exc:
            path.unlink(missing_ok=True)
            raise ApplyError(
                self.name, f"the TLS certificate or key does not load: {exc}"
            ) from None
        return ctx

    async def _listen(self, listener: Listener, ctx: ssl.SSLContext | None) -> None:
        if self._runner is None:
            self._runner = web.AppRunner(
                self.proxy.app(),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
            await self._runner.setup()
        try:
            sock = _listening_socket(listener.address, listener.port)
        except OSError as exc:
            raise ApplyError(self.name, f"cannot listen on {listener}: {exc}") from None
        site = web.SockSite(self._runner, sock, ssl_context=ctx)
        await site.start()
        await self._stop_site()
        self._site, self._sock, self._bound = site, sock, listener
        self._forget_tls_files(keep=listener.tls_digest)
        self.state.event(f"listening on {listener}")
        log.info("console proxy listening on %s", listener)

    def _forget_tls_files(self, keep: str | None) -> None:
        if self.tls_dir.is_dir():
            for path in self.tls_dir.glob("*.pem"):
                if path.stem != keep:
                    path.unlink(missing_ok=True)

    async def _stop_site(self) -> None:
        if self._site is not None:
            with contextlib.suppress(Exception):
                await self._site.stop()
        if self._sock is not None:
            self._sock.close()
        self._site, self._sock, self._bound = None, None, None


def _listening_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _digest(tls: Tls | None) -> str | None:
    if tls is None:
        return None
    return hashlib.sha256(f"{tls.certificate}\0{tls.key}".encode()).hexdigest()[:32]
