"""The console proxy as an agent service: one listener, settings swapped on commit.

A new document swaps the keys and limits in place (running sessions go on, and
a shorter idle timeout applies to them too). A new address or port binds the
new listener before the old one stops listening; sessions already bridged are
not cut, since they live on their own connections.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path

from aiohttp import web

from appliances.agent.service import AgentContext, Change, Service
from appliances.common.errors import ApplyError
from appliances.console.document import ConsoleDocument
from appliances.console.proxy import STATIC_DIR, ConsoleProxy, ProxySettings

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 2.0


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
        self._bound: tuple[str, int] | None = None

    # -- the contract --------------------------------------------------------------------

    async def prepare(self, doc: ConsoleDocument) -> Change:
        settings = settings_of(doc)
        listen = (doc.listen.address, doc.listen.port)
        if self.port_override is not None:
            listen = (doc.listen.address, self.port_override)
        same_listener = self._bound is not None and self._bound == listen
        if settings == self.proxy.settings and same_listener:
            return Change(self.name, False, "unchanged")
        parts = [] if same_listener else [f"listen on {listen[0]}:{listen[1]}"]
        if settings != self.proxy.settings:
            parts.append(
                f"{len(settings.keys)} token key(s), idle timeout {settings.idle_timeout_s} s, "
                f"limit {settings.session_limit} sessions"
            )
        return Change(self.name, True, "; ".join(parts), (settings, listen))

    async def commit(self, change: Change) -> None:
        settings, listen = change.data
        if self._bound != listen:
            await self._listen(listen)
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
        return {**super().status(), "listening": self.listening(), **self.proxy.status()}

    def listening(self) -> str | None:
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    # -- internals -----------------------------------------------------------------------

    async def _listen(self, listen: tuple[str, int]) -> None:
        if self._runner is None:
            self._runner = web.AppRunner(
                self.proxy.app(),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
            await self._runner.setup()
        try:
            sock = _listening_socket(*listen)
        except OSError as exc:
            raise ApplyError(
                self.name, f"cannot listen on {listen[0]}:{listen[1]}: {exc}"
            ) from None
        site = web.SockSite(self._runner, sock)
        await site.start()
        await self._stop_site()
        self._site, self._sock, self._bound = site, sock, listen
        self.state.event(f"listening on {self.listening()}")
        log.info("console proxy listening on %s", self.listening())

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
