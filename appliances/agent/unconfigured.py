"""The agent without a boot configuration: it can prove nothing about itself (no
certificate), so it answers only /v1/health and /v1/status, over plain HTTP, with
503 and the reason, until the appliance is given a configuration and restarted."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

log = logging.getLogger("skiff.agent")

STATUS = web.AppKey("status", dict)


async def _answer(request: web.Request) -> web.Response:
    return web.json_response({"status": "unconfigured", "boot": request.app[STATUS]},
                             status=503)


def build_app(status: dict) -> web.Application:
    app = web.Application()
    app[STATUS] = status
    app.router.add_get("/v1/health", _answer)
    app.router.add_get("/v1/status", _answer)
    return app


async def serve_unconfigured(listen: str, port: int, status: dict,
                             stop: asyncio.Event | None = None) -> None:
    runner = web.AppRunner(build_app(status), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen, port).start()
    log.warning("unconfigured: answering http://%s:%s/v1/health with the boot error", listen,
                port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run_unconfigured(listen: str, port: int, status: dict) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_unconfigured(listen, port, status))
    return 1
