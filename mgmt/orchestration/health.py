"""A router's health, from its agent's live status (GET /v1/status over mutual TLS).

The answer becomes CloudStack's health-check results (one check for the
agent, one for the applied document, one per service) and is kept on the
router row with the agent's version, its redundancy state and when it was
last seen, for listRouters and the reconcile loop.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from mgmt.commands.common import date
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.types import utcnow
from mgmt.orchestration.hosts.driver import AgentEndpoint, HostHealth

__all__ = ["HostHealth", "Status", "check", "checks_from", "look"]

STATUS_TIMEOUT = 3.0


@dataclass
class Status:
    """What one look at a router found."""

    reachable: bool
    generation: int | None = None
    document_hash: str | None = None
    converged: bool = False
    error: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: When the heartbeat this stands for was received (None: from a poll, now).
    heard: datetime | None = None


def _check(name: str, success: bool, details: str, kind: str = "basic") -> dict[str, Any]:
    return {"checkname": name, "checktype": kind, "success": success,
            "lastupdated": date(utcnow()), "details": details}


def checks_from(status: dict[str, Any], expected_generation: int) -> list[dict[str, Any]]:
    """Health-check results from an agent's /v1/status body."""
    generation = status.get("applied_generation")
    out = [
        _check("agent", True, f"agent {status.get('version', '?')} up "
               f"{status.get('uptime_s', '?')} s"),
        _check("document", bool(status.get("converged")) and generation == expected_generation,
               f"generation {generation} applied (expected {expected_generation}); "
               f"converged: {status.get('converged')}; last error: "
               f"{json.dumps(status.get('last_error'))[:500]}"),
    ]
    for name, svc in sorted((status.get("services") or {}).items()):
        ok = not svc.get("live_error") and svc.get("healthy", True) is not False
        details = svc.get("live_error") or json.dumps(
            {k: v for k, v in svc.items() if k in ("state", "running", "pid", "restarts",
                                                   "healthy", "role", "events")})[:500]
        out.append(_check(name, ok, details, "advanced"))
    return out


def _redundant_state(status: dict[str, Any]) -> str | None:
    """PRIMARY, BACKUP, FAULT or STOPPED from the agent's redundancy service; None for a
    router that is not in a pair."""
    svc = (status.get("services") or {}).get("redundancy") or {}
    state = (svc.get("vrrp") or {}).get("state")
    return str(state).upper() if state else None


async def look(orch, router_id: int) -> Status:
    """Ask the router's agent; record what it said (or that it did not answer)."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        expected = router.applied_generation
    if host is None or vm.state != "Running":
        return Status(False, error=f"router {vm.name} is {vm.state}")
    try:
        client = await orch.agent(host, vm, router, timeout=STATUS_TIMEOUT)
        reply = await client.status(timeout=STATUS_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means: did not answer
        reason = None
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError) and router.control_ip:
            endpoint = await orch.driver(host).agent_endpoint(vm.name, router.control_ip)
            reason = await unconfigured_reason(endpoint)
        return Status(False, error=reason or f"{type(exc).__name__}: {exc}")
    if not reply.ok or not isinstance(reply.body, dict):
        return Status(False, error=f"HTTP {reply.status}: {str(reply.body)[:300]}")
    body = reply.body
    found = Status(True, body.get("applied_generation"),
                   orch.fingerprints.reported(body.get("document_hash")),
                   bool(body.get("converged")), checks=checks_from(body, expected))
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        router.last_seen = utcnow()
        router.version = str(body.get("version") or "1")[:64]
        router.health = json.dumps(found.checks)
        state = _redundant_state(body)
        if state:
            router.redundant_state = state
        await session.commit()
    return found


async def unconfigured_reason(endpoint: AgentEndpoint,
                              timeout: float = STATUS_TIMEOUT) -> str | None:
    """``unconfigured: <why>`` when the agent at endpoint runs without a usable boot
    configuration (it then has no certificate, so the mutual-TLS handshake fails, and
    answers /v1/status over plain HTTP with 503 and the boot error); else None."""
    url = f"http://{endpoint.host}:{endpoint.port}/v1/status"
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
                    s.get(url) as resp):
            if resp.status != 503:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("status") != "unconfigured":
        return None
    boot = body.get("boot") if isinstance(body.get("boot"), dict) else {}
    return f"unconfigured: {str(boot.get('error') or 'no boot configuration')[:500]}"


async def check(orch, router_id: int) -> list[dict[str, Any]]:
    """Fresh health-check results (getRouterHealthCheckResults)."""
    found = await look(orch, router_id)
    if not found.reachable:
        return [_check("agent", False, found.error or "no answer")]
    return found.checks
