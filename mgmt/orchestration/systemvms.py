"""System VMs: each zone's secondary storage VM and console proxy, as CloudStack has them.

``ensure_zone`` gives a zone that is ready for them (Enabled, an Up and Enabled
host, an Enabled physical network carrying Public traffic, a public range) its
two system VMs (their life cycle: mgmt.orchestration.systemvm_lifecycle).
``pass_once`` is the system VMs' reconcile pass, run in the background by
``kick`` (from the router reconcile loop's every pass, and when a zone is enabled
or a host added): it ensures every ready zone, looks at every running system VM
(its host's listing, then its agent's status over mutual TLS), pushes a document
that changed or drifted (the storage VM's image list follows the templates this
way), and recreates one that missed ``router.check.failures`` checks in a row or
whose start failed, with an event, unless more than
``router.recreate.max.fraction`` of them went silent at once or the router loop's
breaker is open (then an alert, and none is recreated). A system VM an admin
stopped stays stopped until startSystemVm; one destroyed is replaced by the next
pass, as in CloudStack.

For other modules: ``agent_for`` (the running system VM's agent client),
``public_address``, ``push_zone`` (push a changed document now) and ``DOCUMENTS``
(the document builder of each role, systemvm_documents).

A zone has at most one live system VM per role (a unique index), so two servers
that ensure a zone at once create one of each; the lease in a system VM's row
(``hold``) serialises the rest.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select

from appliances.lab.agentclient import AgentClient
from mgmt.api.errors import ApiError
from mgmt.db.models import Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import Host, PhysicalNetwork, PublicIp, TrafficType, VlanIpRange
from mgmt.db.models.systemvms import SystemVm
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration import health
from mgmt.orchestration.locks import LockTimeout
from mgmt.orchestration.systemvm_documents import DOCUMENTS
from mgmt.orchestration.systemvm_lifecycle import (
    API_TYPE,
    EVENT_PREFIX,
    LABEL,
    ROLES,
    SystemVmRefused,
    SystemVmUnreachable,
    create,
    destroy,
    hold,
    live_row,
    look,
    push,
    recreate,
    start,
    stop,
)

__all__ = [
    "API_TYPE",
    "DOCUMENTS",
    "EVENT_PREFIX",
    "ROLES",
    "agent_for",
    "destroy",
    "ensure_zone",
    "hold",
    "kick",
    "pass_once",
    "public_address",
    "push_zone",
    "start",
    "stop",
]

log = logging.getLogger("skiff.systemvms")

#: After a failed start, the next attempt for that zone and role waits this long,
#: doubling up to RETRY_MAX.
RETRY_FIRST, RETRY_MAX = 5.0, 300.0
PARALLEL_LOOKS = 16


async def ready_zones(session) -> list[int]:
    """Zones ready for system VMs: Enabled, with an Up and Enabled host, an Enabled
    physical network carrying Public traffic and a public range (CloudStack waits for
    its zone's public network in the same way)."""
    public = (
        select(TrafficType.id)
        .join(PhysicalNetwork, PhysicalNetwork.id == TrafficType.physical_network_id)
        .where(
            PhysicalNetwork.zone_id == Zone.id,
            PhysicalNetwork.live(),
            PhysicalNetwork.state == "Enabled",
            TrafficType.live(),
            TrafficType.traffic_type == "Public",
        )
    )
    host = select(Host.id).where(
        Host.zone_id == Zone.id, Host.live(), Host.state == "Up", Host.resource_state == "Enabled"
    )
    ranges = select(VlanIpRange.id).where(VlanIpRange.zone_id == Zone.id, VlanIpRange.live())
    rows = await session.scalars(
        select(Zone.id)
        .where(
            Zone.live(),
            Zone.allocation_state == "Enabled",
            exists(host),
            exists(public),
            exists(ranges),
        )
        .order_by(Zone.id)
    )
    return list(rows.all())


async def push_zone(orch, zone_id: int, role: str, *, force: bool = False) -> int | None:
    """Push the zone's running system VM of role its current document (for modules
    whose change it carries: the storage VM's images); None when none runs."""
    async with orch.db.sessions() as session:
        found = await live_row(session, zone_id, role)
    if found is None or found[1].state != "Running":
        return None
    async with hold(orch, found[0].id):
        return await push(orch, found[0].id, force=force)


async def agent_for(orch, zone_id: int, role: str) -> AgentClient | None:
    """A mutual-TLS client of the zone's running system VM of role (``storage`` or
    ``console``), or None when it has none running."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    async with orch.db.sessions() as session:
        found = await live_row(session, zone_id, role)
        if found is None or found[1].state != "Running" or found[1].host_id is None:
            return None
        svm, vm = found
        host = await session.get_one(Host, vm.host_id)
    return await orch.agent(host, vm, svm)  # type: ignore[arg-type]


async def public_address(orch, zone_id: int, role: str) -> str | None:
    """The public address of the zone's system VM of role (None: it has none)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    async with orch.db.sessions() as session:
        found = await live_row(session, zone_id, role)
        if found is None or found[0].public_ip_id is None:
            return None
        ip = await session.get(PublicIp, found[0].public_ip_id)
        return ip.address if ip else None


# -- the zone and the pass -----------------------------------------------------------------


@dataclass
class Watch:
    """One server's memory of its passes (misses in a row, the breaker, retry times)."""

    failures: dict[int, int] = field(default_factory=dict)
    breaker_open: bool = False
    retry: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)
    task: asyncio.Task | None = None
    again: bool = False


_watches: weakref.WeakKeyDictionary[Any, Watch] = weakref.WeakKeyDictionary()


def watch_of(orch) -> Watch:
    watch = _watches.get(orch)
    if watch is None:
        watch = _watches[orch] = Watch()
    return watch


@dataclass
class Report:
    """What one pass found and did (for tests and the log)."""

    zones: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    checked: int = 0
    pushed: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    recreated: list[int] = field(default_factory=list)
    breaker_open: bool = False


def _due(watch: Watch, key: tuple[int, str]) -> bool:
    at = watch.retry.get(key)
    return at is None or asyncio.get_running_loop().time() >= at[0]


def _failed(watch: Watch, key: tuple[int, str]) -> None:
    delay = min(RETRY_MAX, (watch.retry.get(key, (0.0, RETRY_FIRST / 2))[1]) * 2)
    watch.retry[key] = (asyncio.get_running_loop().time() + delay, delay)


async def ensure_zone(orch, zone_id: int) -> list[int]:
    """Start the zone's missing system VMs if the zone is ready for them (see
    ready_zones); returns the ids of those started. A failed start is recorded (event,
    the VM in Error) and tried again after a back-off."""
    async with orch.db.sessions() as session:
        if zone_id not in await ready_zones(session):
            return []
    results = await asyncio.gather(*(_ensure(orch, zone_id, role) for role in ROLES))
    return [r for r in results if r is not None]


async def _ensure(orch, zone_id: int, role: str) -> int | None:
    watch = watch_of(orch)
    key = (zone_id, role)
    if not _due(watch, key):
        return None
    try:
        svm_id = await create(orch, zone_id, role)
    except ApiError as exc:  # no free public address
        _failed(watch, key)
        log.warning("zone %s: no %s: %s", zone_id, LABEL[role], exc.text)
        return None
    if svm_id is None:
        return None
    try:
        async with hold(orch, svm_id, timeout=1.0):
            await start(orch, svm_id)
    except (ApiError, LockTimeout) as exc:
        _failed(watch, key)
        await orch.record_event(
            f"{EVENT_PREFIX[role]}.CREATE",
            f"starting the {LABEL[role]} of zone {zone_id} failed: {exc}",
            None,
            None,
            level="ERROR",
        )
        return None
    watch.retry.pop(key, None)
    async with orch.db.sessions() as session:
        name = (
            await session.get_one(VmInstance, (await session.get_one(SystemVm, svm_id)).vm_id)
        ).name
    await orch.record_event(
        f"{EVENT_PREFIX[role]}.CREATE",
        f"started {LABEL[role]} {name} in zone {zone_id}",
        None,
        None,
    )
    return svm_id


def kick(orch) -> asyncio.Task | None:
    """Run a pass in the background now, or once more after the one in flight. Does
    nothing before the orchestrator has its CA (an orchestrator that was not started)."""
    if orch is None or orch.ca is None:
        return None
    watch = watch_of(orch)
    if watch.task is not None and not watch.task.done():
        watch.again = True
        return watch.task
    watch.again = False
    watch.task = orch.spawn(_passes(orch, watch), "systemvm-pass")
    return watch.task


async def _passes(orch, watch: Watch) -> None:
    while True:
        try:
            await pass_once(orch)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next kick tries again
            log.exception("system VM pass failed")
        if not watch.again:
            return
        watch.again = False


async def pass_once(orch) -> Report:
    watch = watch_of(orch)
    report = Report()
    async with orch.db.sessions() as session:
        report.zones = await ready_zones(session)
    for zone_id in report.zones:
        report.started += await ensure_zone(orch, zone_id)
    now = utcnow()
    async with orch.db.sessions() as session:
        rows = list(
            (
                await session.execute(
                    select(
                        SystemVm.id,
                        SystemVm.zone_id,
                        SystemVm.role,
                        VmInstance.name,
                        VmInstance.state,
                        VmInstance.host_id,
                        SystemVm.lock_owner,
                        SystemVm.lock_expires,
                    )
                    .join(VmInstance, VmInstance.id == SystemVm.vm_id)
                    .where(SystemVm.live(), VmInstance.live())
                    .order_by(SystemVm.id)
                )
            ).all()
        )
        threshold = int(await get_setting(session, "router.check.failures"))
        fraction = float(await get_setting(session, "router.recreate.max.fraction"))
    running = [r for r in rows if r.state == "Running"]
    # Start failed, or a server died while it started or stopped it (its lease ran out).
    broken = [
        r.id
        for r in rows
        if r.state == "Error"
        or (r.state in ("Starting", "Stopping") and (r.lock_owner is None or r.lock_expires < now))
    ]
    watch.failures = {k: v for k, v in watch.failures.items() if k in {r.id for r in running}}
    absent = await _absent(orch, running)
    limit = asyncio.Semaphore(PARALLEL_LOOKS)

    async def one(svm_id: int) -> tuple[int, health.Status]:
        if svm_id in absent:
            return svm_id, health.Status(False, error="not running on its host")
        async with limit:
            return svm_id, await look(orch, svm_id)

    looks = await asyncio.gather(*(one(r.id) for r in running))
    report.checked = len(looks)
    for svm_id, status in looks:
        if not status.reachable:
            watch.failures[svm_id] = watch.failures.get(svm_id, 0) + 1
            continue
        watch.failures.pop(svm_id, None)
        if await _converge(orch, svm_id, status):
            report.pushed.append(svm_id)
    dead = [k for k, n in watch.failures.items() if n >= threshold]
    report.silent = list(dead)
    candidates = dead + broken
    if not candidates:
        watch.breaker_open = False
        return report
    routers_breaker = bool(getattr(getattr(orch, "reconciler", None), "breaker_open", False))
    if routers_breaker or (len(dead) > 1 and len(dead) > fraction * len(running)):
        report.breaker_open = True
        if not watch.breaker_open:
            await orch.record_event(
                "SYSTEMVM.RECREATE.HALTED",
                f"{len(dead)} of {len(running)} system VMs stopped answering at once"
                f"{' and the router breaker is open' if routers_breaker else ''}: none is "
                "recreated automatically (check the hosts and the control network; "
                "rebootSystemVm or destroySystemVm repairs one by hand)",
                None,
                None,
                level="ERROR",
            )
        watch.breaker_open = True
        return report
    watch.breaker_open = False
    by_id = {r.id: r for r in rows}
    for svm_id in candidates:
        key = (by_id[svm_id].zone_id, by_id[svm_id].role)
        if not _due(watch, key):
            continue
        watch.failures.pop(svm_id, None)
        reason = "it stopped answering" if svm_id in dead else f"it was left {by_id[svm_id].state}"
        if await _recreate(orch, svm_id, reason, watch, key):
            report.recreated.append(svm_id)
    return report


async def _absent(orch, running) -> set[int]:
    """Running system VMs their host's listing does not show (a host that cannot list,
    or lists nothing, decides nothing)."""
    by_host: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in running:
        if r.host_id is not None:
            by_host[r.host_id].append((r.id, r.name))
    out: set[int] = set()
    for host_id, on_host in by_host.items():
        async with orch.db.sessions() as session:
            host = await session.get(Host, host_id)
        if host is None:
            continue
        try:
            present = await asyncio.wait_for(orch.driver(host).running(), health.STATUS_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the looks decide instead
            log.debug("listing host %s failed: %s", host.name, exc)
            continue
        if present:
            out |= {svm_id for svm_id, name in on_host if name not in present}
    return out


async def _converge(orch, svm_id: int, status: health.Status) -> bool:
    """Push when the document changed or the agent drifted; whether a push went out."""
    async with orch.db.sessions() as session:
        svm = await session.get_one(SystemVm, svm_id)
        expected = (svm.applied_generation, svm.applied_hash)
    drift = svm.applied_hash is not None and (
        (status.generation, status.document_hash) != expected or not status.converged
    )
    try:
        async with hold(orch, svm_id, timeout=1.0):
            generation = await push(orch, svm_id, force=drift)
    except (SystemVmRefused, SystemVmUnreachable, LockTimeout) as exc:
        log.warning("pushing system VM %s failed: %s", svm_id, exc)
        return False
    return drift or generation != expected[0]


async def _recreate(orch, svm_id: int, reason: str, watch: Watch, key: tuple[int, str]) -> bool:
    try:
        async with hold(orch, svm_id, timeout=1.0):
            async with orch.db.sessions() as session:
                svm = await session.get(SystemVm, svm_id)
                if svm is None or svm.removed is not None:
                    return False  # another server replaced it already
            new_id = await recreate(orch, svm_id, reason)
    except LockTimeout:
        return False  # another server is working on it
    except Exception as exc:  # noqa: BLE001 - reported, retried after a back-off
        _failed(watch, key)
        log.exception("recreating system VM %s failed", svm_id)
        await orch.record_event(
            "SYSTEMVM.RECREATE.FAILED",
            f"recreating system VM {svm_id} failed: {exc}",
            None,
            None,
            level="ERROR",
        )
        return False
    if new_id is None:
        return False
    watch.retry.pop(key, None)
    return True
