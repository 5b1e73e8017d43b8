"""A stand-in agent for topology tests: mutual TLS, /v1/health, PUT /v1/config.

It validates documents with the real model but configures nothing, so the lab's own
plumbing can be tested without depending on the router services.
Run as: python stub_agent.py <the agent's flags> (the same flags as `skiff agent`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl

from aiohttp import web

from appliances.common.errors import DocumentError
from appliances.router.verify import parse_document


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "stub": True})


async def put_config(request: web.Request) -> web.Response:
    try:
        doc = parse_document(await request.json())
    except DocumentError as exc:
        return web.json_response({"errors": [e.as_dict() for e in exc.errors]}, status=422)
    return web.json_response({"applied": doc.generation})


async def serve(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_put("/v1/config", put_config)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.listen, args.port, ssl_context=ctx).start()
    print(f"stub agent {args.id} on {args.listen}:{args.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser()
    for flag in ("--role", "--id", "--state-dir", "--listen", "--port", "--ca", "--cert",
                 "--key"):
        p.add_argument(flag)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
