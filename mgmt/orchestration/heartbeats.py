"""Signed heartbeats on the management side: accept one, record it, judge freshness.

``accept`` verifies a heartbeat (appliances.common.heartbeat: signature, chain to
the appliance CA in the keystore, name, send time), checks that it names a live
router and carries a higher sequence number than the last one accepted for it,
and records it on the router row in the same UPDATE that compares the sequence,
so two servers receiving a replay at once cannot both accept it. It also brings
what listRouters shows up to date: the agent's version, the redundant state and
the health checks (``agent``, ``document`` and one per service it reports).

The reconcile loop (reconcile.py) takes a heartbeat received within
``STALE_INTERVALS`` of the agent's own interval, and after the router's current
start, as the router's answer: no poll. Only a router whose heartbeat is stale
is polled, and only a failed poll counts as a miss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import or_, select, update

from appliances.common import heartbeat as wire
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.types import utcnow
from mgmt.orchestration import health
from mgmt.orchestration.fingerprints import Fingerprints

log = logging.getLogger("skiff.heartbeat")

#: A heartbeat older than this many of the agent's intervals is stale.
STALE_INTERVALS = 3
#: The health checks a heartbeat without services replaces (checks_from's first two).
HEARTBEAT_CHECKS = ("agent", "document")


async def accept(orch, body: bytes, headers: Mapping[str, str]) -> wire.Heartbeat:
    """Record a genuine, new heartbeat; raise wire.Rejected (nothing changed) otherwise."""
    if orch.ca is None:
        raise wire.Rejected(503, "the management server is starting; try again")
    beat = wire.verify(body, headers, orch.ca.cert)
    async with orch.db.sessions() as session, session.begin():
        row = (await session.execute(
            select(Router, VmInstance).join(VmInstance, VmInstance.id == Router.vm_id)
            .where(VmInstance.name == beat.appliance_id, VmInstance.type == "DomainRouter",
                   Router.live(), VmInstance.live()))).first()
        if row is None:
            raise wire.Rejected(403, f"{beat.appliance_id} is not a router of this cloud")
        router, _vm = row
        values = _values(router, beat, orch.fingerprints)
        done = await session.execute(
            update(Router).where(Router.id == router.id, or_(
                Router.heartbeat_seq.is_(None), Router.heartbeat_seq < beat.sequence))
            .values(**values).execution_options(synchronize_session=False))
        if done.rowcount != 1:
            raise wire.Rejected(403, f"sequence {beat.sequence} is not above the last one "
                                     f"accepted from {beat.appliance_id} "
                                     f"({router.heartbeat_seq}): a replay")
    return beat


def _values(router: Router, beat: wire.Heartbeat, fingerprints: Fingerprints) -> dict:
    """The router row's columns after beat (see the module docstring)."""
    status = {"version": beat.version, "uptime_s": beat.uptime_s,
              "applied_generation": beat.applied_generation, "converged": beat.converged,
              "last_error": beat.last_error,
              "services": {name: svc.model_dump() for name, svc in beat.services.items()}}
    fresh = health.checks_from(status, router.applied_generation)
    kept: list = []
    if not beat.services:  # an agent that reports none: keep the last poll's
        try:
            old = json.loads(router.health or "[]")
        except ValueError:
            old = []
        kept = [c for c in old if isinstance(c, dict)
                and c.get("checkname") not in HEARTBEAT_CHECKS] if isinstance(old, list) else []
    values = {
        "last_heartbeat": utcnow(), "heartbeat_seq": beat.sequence,
        "heartbeat_interval": beat.interval, "heartbeat_generation": beat.applied_generation,
        "heartbeat_hash": fingerprints.reported(beat.document_hash),
        "heartbeat_converged": beat.converged,
        "heartbeat_error": beat.last_error, "version": beat.version[:64],
        "health": json.dumps(fresh + kept),
    }
    if beat.redundant_state:
        values["redundant_state"] = beat.redundant_state
    return values


def is_fresh(last: datetime | None, interval: float | None, started: datetime | None,
             now: datetime) -> bool:
    """Whether a heartbeat received at ``last`` still stands for the router."""
    if last is None or not interval:
        return False
    if started is not None and last < started:
        return False  # from before the router's current start
    return (now - last).total_seconds() <= STALE_INTERVALS * interval


async def fresh_statuses(orch, router_ids: Iterable[int]) -> dict[int, health.Status]:
    """The routers among router_ids with a fresh heartbeat, as what it said."""
    ids = list(router_ids)
    if not ids:
        return {}
    now = utcnow()
    async with orch.db.sessions() as session:
        rows = (await session.execute(
            select(Router.id, Router.last_heartbeat, Router.heartbeat_interval,
                   VmInstance.started, Router.heartbeat_generation, Router.heartbeat_hash,
                   Router.heartbeat_converged)
            .join(VmInstance, VmInstance.id == Router.vm_id)
            .where(Router.id.in_(ids), Router.last_heartbeat.is_not(None)))).all()
    return {
        router_id: health.Status(True, generation, doc_hash, bool(converged), heard=last)
        for router_id, last, interval, started, generation, doc_hash, converged in rows
        if is_fresh(last, interval, started, now)
    }
