"""The heartbeat endpoint (POST /skiff/v1/heartbeat) and the listeners that carry it.

Not a CloudStack API command: no API key, no session. A heartbeat proves itself
with its signature and certificate (appliances.common.heartbeat); a bad one gets
400 or 403 with a plain-text reason, is logged, and changes nothing. A good one
gets 204.

The API's own listener serves the endpoint too, but routers usually cannot
reach it (it may be on loopback). ``HeartbeatSites`` makes small listeners that
serve this endpoint and nothing else, for the host drivers
(``HostDriver.heartbeat_url``): the netns driver binds one on its host's control
address, which the root namespace holds, and the ssh driver binds one on
loopback for the SSH reverse forward from the remote host's control address to
end at. A router on the control network so reaches heartbeats, never the API.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from aiohttp import web

from appliances.common import heartbeat as wire
from mgmt.orchestration import heartbeats

log = logging.getLogger("skiff.heartbeat")

ORCHESTRATOR = web.AppKey("orchestrator", Any)


async def receive(request: web.Request, orch: Any) -> web.Response:
    if orch is None:
        return web.Response(status=503, text="this server takes no heartbeats\n")
    body = await request.content.read(wire.MAX_BODY + 1)
    try:
        beat = await heartbeats.accept(orch, body, request.headers)
    except wire.Rejected as exc:
        log.warning("heartbeat from %s refused (%d): %s", request.remote, exc.status, exc.reason)
        return web.Response(status=exc.status, text=exc.reason + "\n")
    log.debug("heartbeat %s from %s", beat.sequence, beat.appliance_id)
    return web.Response(status=204)


async def _handler(request: web.Request) -> web.Response:
    return await receive(request, request.app[ORCHESTRATOR])


def build_heartbeat_app(orch: Any) -> web.Application:
    """An application that serves heartbeats only."""
    app = web.Application(client_max_size=wire.MAX_BODY)
    app[ORCHESTRATOR] = orch
    app.router.add_post(wire.PATH, _handler)
    return app


class HeartbeatSites:
    """Heartbeat-only listeners, one per address (mgmt.orchestration.hosts.driver's
    HeartbeatSink)."""

    def __init__(self, orch: Any):
        self.orch = orch
        self._runner: web.AppRunner | None = None
        self._ports: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def bind(self, address: str, port: int) -> int:
        """Serve heartbeats on address:port (0, or port taken: any free port); the port.
        The same address again: the listener made the first time."""
        async with self._lock:
            if address in self._ports:
                return self._ports[address]
            if self._runner is None:
                self._runner = web.AppRunner(build_heartbeat_app(self.orch), access_log=None)
                await self._runner.setup()
            try:
                bound = await self._site(address, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port == 0:
                    raise
                bound = await self._site(address, 0)  # another server holds it
            self._ports[address] = bound
            log.info("heartbeats on http://%s:%d%s", address, bound, wire.PATH)
            return bound

    async def _site(self, address: str, port: int) -> int:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
            sock.setblocking(False)
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._ports.clear()
