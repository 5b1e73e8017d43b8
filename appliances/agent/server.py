"""The agent's HTTP API (aiohttp), served only over mutual TLS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import time
from pathlib import Path

import orjson
from aiohttp import web

from appliances.agent.bootfw import BootFirewall
from appliances.agent.gcpolicy import GcPolicy
from appliances.agent.heartbeat import HeartbeatSender, services_health, short_error
from appliances.agent.pipeline import Applier, GenerationConflict
from appliances.agent.service import AgentContext
from appliances.agent.store import DocumentStore
from appliances.agent.tls import check_identity, server_context
from appliances.common.errors import ApplyError, DocumentError
from appliances.common.version import skiff_version
from appliances.roles import load_role

log = logging.getLogger("skiff.agent")

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

APPLIER = web.AppKey("applier", Applier)
GC = web.AppKey("gc", GcPolicy)
INFO = web.AppKey("info", dict)
BOOT_FIREWALL = web.AppKey("boot_firewall", BootFirewall)


def _json(data: dict, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    applier = request.app[APPLIER]
    info = request.app[INFO]
    return _json(
        {
            **info,
            "uptime_s": round(time.monotonic() - info["started"], 1),
            "applied_generation": applier.generation,
            "converged": applier.converged,
            "document_hash": applier.document_hash,
            "last_error": applier.last_error,
            "services": await applier.live_status(),
        }
    )


async def get_config(request: web.Request) -> web.Response:
    applier = request.app[APPLIER]
    if applier.document_body is None:
        return _json({"error": "no document has been applied yet"}, 404)
    return web.Response(body=applier.document_body, content_type="application/json")


async def put_config(request: web.Request) -> web.Response:
    with request.app[GC].paused():
        return await _put_config(request)


async def _put_config(request: web.Request) -> web.Response:
    applier = request.app[APPLIER]
    started = time.perf_counter()
    body = await request.read()
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"the body is not JSON: {exc}"}, 400)
    try:
        doc = applier.parse(raw)
    except DocumentError as exc:
        return _json(
            {"error": "invalid document", "errors": [e.as_dict() for e in exc.errors]}, 422
        )
    parsed = time.perf_counter()
    try:
        outcome = await applier.apply(doc, raw, body)
    except GenerationConflict as exc:
        return _json({"error": str(exc), "applied_generation": applier.generation}, 409)
    except ApplyError as exc:
        return _json(
            {
                "error": "apply failed; every service was returned to the last good document",
                "service": exc.service,
                "message": str(exc),
                "output": exc.output,
                "applied_generation": applier.generation,
            },
            500,
        )
    if outcome.changed:
        request.app[GC].after_apply(release=applier.release_retired)
    await request.app[BOOT_FIREWALL].release()
    done = time.perf_counter()
    return _json(
        {
            "applied_generation": outcome.generation,
            "changed": outcome.changed,
            "services": outcome.services,
            "elapsed_ms": round((done - started) * 1000, 1),
            "timings_ms": {
                "parse": round((parsed - started) * 1000, 1),
                "services": round(outcome.elapsed_ms, 1),
                "total": round((done - started) * 1000, 1),
            },
        }
    )


async def schema(request: web.Request) -> web.Response:
    return _json(request.app[APPLIER].role.model.model_json_schema())


def build_app(applier: Applier, info: dict,
              boot_firewall: BootFirewall | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_DOCUMENT_BYTES)
    app[APPLIER] = applier
    app[INFO] = info
    app[BOOT_FIREWALL] = boot_firewall or BootFirewall(enabled=False)
    app[GC] = GcPolicy()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/config", get_config)
    app.router.add_put("/v1/config", put_config)
    app.router.add_get("/v1/schema", schema)
    for service in applier.services:
        app.router.add_routes(service.routes())
    return app


def _redundant_state(applier: Applier) -> str | None:
    """VRRP state of a redundant router (PRIMARY, BACKUP, FAULT...), else None."""
    for service in applier.services:
        state = getattr(service, "vrrp_state", None)
        if state:
            return str(state).upper()[:16]
    return None


def heartbeat_state(applier: Applier, info: dict) -> dict:
    """The heartbeat's fields that describe the agent (appliances.common.heartbeat)."""
    return {
        "appliance_id": info["appliance_id"],
        "role": info["role"],
        "applied_generation": applier.generation,
        "document_hash": applier.document_hash,
        "converged": applier.converged,
        "last_error": short_error(applier.last_error),
        "version": info["version"][:64],
        "redundant_state": _redundant_state(applier),
        "services": services_health(applier.services),
    }


async def serve(args: argparse.Namespace) -> None:
    check_identity(args.cert, args.appliance_id)
    ssl_ctx = server_context(args.ca, args.cert, args.key)
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    ctx = AgentContext(args.appliance_id, state_dir, args.port)
    role = load_role(args.role)()
    services = role.services(ctx)
    applier = Applier(role, services, DocumentStore(state_dir))
    info = {
        "role": role.name,
        "appliance_id": args.appliance_id,
        "version": skiff_version(),
        "started": time.monotonic(),
    }
    boot_status = getattr(args, "boot_status", None)
    if boot_status is not None:
        with contextlib.suppress(OSError, ValueError):
            info["boot"] = json.loads(Path(boot_status).read_text())
    boot_firewall = BootFirewall(enabled=getattr(args, "boot_firewall", False))
    for service in services:
        await service.start()
    await applier.restore()
    if applier.generation is not None and applier.converged:
        await boot_firewall.release()

    runner = web.AppRunner(build_app(applier, info, boot_firewall), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port, ssl_context=ssl_ctx)
    await site.start()
    log.info(
        "agent %s (%s) listening on https://%s:%s",
        args.appliance_id,
        role.name,
        args.listen,
        args.port,
    )

    sender = None
    if getattr(args, "heartbeat_url", None):
        sender = HeartbeatSender(args.heartbeat_url, args.heartbeat_interval, args.key,
                                 args.cert, lambda: heartbeat_state(applier, info), state_dir)
        sender.start()
        log.info("heartbeats to %s every %g s", args.heartbeat_url, args.heartbeat_interval)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if sender is not None:
        await sender.stop()
    await runner.cleanup()
    await applier.stop()
    for service in reversed(services):
        with contextlib.suppress(Exception):
            await service.stop()


def run_agent(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args))
    return 0
