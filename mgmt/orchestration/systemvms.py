"""System VMs: each zone's secondary storage VM and console proxy, as CloudStack has them.

A system VM is a ``vm_instances`` row of type ``SecondaryStorageVm`` (``s-<id>-VM``,
agent role ``storage``) or ``ConsoleProxy`` (``v-<id>-VM``, role ``console``) and a
``system_vms`` row; the VM's name is its appliance id, in its certificate. Two
NICs: control (eth0, a link-local address on its host, as a router's) and public
(eth1, an address of the zone's public range owned by the system: no account, no
network). Starting one is a router's start with another role: a host, a control
address, a fresh certificate, the driver's start, the agent's health, the whole
document (systemvm_documents.DOCUMENTS) pushed.

``ensure_zone`` gives a zone that is ready for them (Enabled, an Up and Enabled
host, an Enabled physical network carrying Public traffic, a public range) its
two system VMs. ``pass_once`` is the system VMs' reconcile pass, run in the
background by ``kick`` (from the router reconcile loop's every pass, and when a
zone is enabled or a host added): it ensures every ready zone, looks at every
running system VM (its host's listing, then its agent's status over mutual TLS),
pushes a document that changed or drifted (the storage VM's image list follows
the templates this way), and recreates one that missed ``router.check.failures``
checks in a row or whose start failed, with an event, unless more than
``router.recreate.max.fraction`` of them went silent at once or the router loop's
breaker is open (then an alert, and none is recreated). A system VM an admin
stopped stays stopped until startSystemVm; one destroyed is replaced by the next
pass, as in CloudStack.

Work on one system VM is serialised across management servers by a lease in its
row (``hold``); a zone has at most one live system VM per role (a unique index),
so two servers that ensure a zone at once create one of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import IntegrityError

from appliances.lab.agentclient import AgentClient
from mgmt.api.errors import ApiError
from mgmt.commands.common import date
from mgmt.db.models import Account, AccountType, Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host, PhysicalNetwork, PublicIp, TrafficType, VlanIpRange
from mgmt.db.models.systemvms import TYPE_OF_ROLE, SystemVm
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration import addresses, allocator, health
from mgmt.orchestration.hosts.driver import PUBLIC_VNI, HostError, NicPlan, RouterPlan
from mgmt.orchestration.locks import LockTimeout
from mgmt.orchestration.placement import free_control_ip, new_mac
from mgmt.orchestration.sync import digest
from mgmt.orchestration.systemvm_documents import DOCUMENTS, DocumentInputs

__all__ = [
    "DOCUMENTS",
    "ROLES",
    "agent_for",
    "ensure_zone",
    "kick",
    "pass_once",
    "public_address",
    "push_zone",
]

log = logging.getLogger("skiff.systemvms")

ROLES = ("storage", "console")
NAME_PREFIX = {"storage": "s", "console": "v"}
#: CloudStack's event prefixes and listSystemVms' systemvmtype, per role.
EVENT_PREFIX = {"storage": "SSVM", "console": "PROXY"}
API_TYPE = {"storage": "secondarystoragevm", "console": "consoleproxy"}
LABEL = {"storage": "secondary storage VM", "console": "console proxy"}
CPU, CPU_MHZ, MEMORY_MIB = 1, 500, 256
AGENT_HEALTH_TIMEOUT = 60.0
LEASE = timedelta(seconds=300)
#: After a failed start, the next attempt for that zone and role waits this long,
#: doubling up to RETRY_MAX.
RETRY_FIRST, RETRY_MAX = 5.0, 300.0
PARALLEL_LOOKS = 16
INSUFFICIENT_CAPACITY = 533


class SystemVmUnreachable(Exception):
    """The agent did not answer (not running, no route, TLS failure, timeout)."""


class SystemVmRefused(Exception):
    """The agent answered and refused the document; the text is its error."""


# -- the lease -----------------------------------------------------------------------------

_local: dict[tuple[str, int], asyncio.Lock] = {}


@contextlib.asynccontextmanager
async def hold(orch, svm_id: int, timeout: float = 120.0) -> AsyncIterator[None]:
    """The system VM's lease (see the module docstring); LockTimeout after timeout."""
    local = _local.setdefault((orch.owner, svm_id), asyncio.Lock())
    async with local:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while not await _take(orch, svm_id):
            if loop.time() > deadline:
                raise LockTimeout(
                    f"system VM {svm_id} stayed locked by another management "
                    f"server for {timeout:.0f} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            async with orch.db.sessions() as session, session.begin():
                await session.execute(
                    update(SystemVm)
                    .where(SystemVm.id == svm_id, SystemVm.lock_owner == orch.owner)
                    .values(lock_owner=None, lock_expires=None)
                )


async def _take(orch, svm_id: int) -> bool:
    now = utcnow()
    async with orch.db.sessions() as session, session.begin():
        result = await session.execute(
            update(SystemVm)
            .where(
                SystemVm.id == svm_id,
                or_(
                    SystemVm.lock_owner.is_(None),
                    SystemVm.lock_expires < now,
                    SystemVm.lock_owner == orch.owner,
                ),
            )
            .values(lock_owner=orch.owner, lock_expires=now + LEASE)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


# -- rows ----------------------------------------------------------------------------------


async def _rows(session, svm_id: int) -> tuple[SystemVm, VmInstance]:
    svm = await session.get_one(SystemVm, svm_id)
    return svm, await session.get_one(VmInstance, svm.vm_id)


async def live_row(session, zone_id: int, role: str) -> tuple[SystemVm, VmInstance] | None:
    row = (
        await session.execute(
            select(SystemVm, VmInstance)
            .join(VmInstance, VmInstance.id == SystemVm.vm_id)
            .where(
                SystemVm.zone_id == zone_id,
                SystemVm.role == role,
                SystemVm.live(),
                VmInstance.live(),
            )
        )
    ).first()
    return (row[0], row[1]) if row else None


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


async def _system_account(session) -> Account:
    """The account system VMs belong to: the root admin's (CloudStack's "system")."""
    account = await session.scalar(
        select(Account)
        .where(Account.type == AccountType.ROOT_ADMIN, Account.live())
        .order_by(Account.id)
        .limit(1)
    )
    if account is None:
        raise ApiError(530, "no root admin account: the database is not bootstrapped")
    return account


async def _set(orch, svm_id: int, state: str | None = None, **values: Any) -> None:
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        if state is not None:
            vm.state = state
            if state == "Running":
                vm.started = utcnow()
        for key, value in values.items():
            setattr(svm, key, value)
        await session.commit()


# -- life cycle ----------------------------------------------------------------------------


async def create(orch, zone_id: int, role: str) -> int | None:
    """Insert the zone's system VM of role (Stopped, leased to this server) with its
    NICs and a system-owned public address; its id, or None when the zone has one."""
    async with orch.db.sessions() as session:
        if await live_row(session, zone_id, role) is not None:
            return None
    ip = await addresses.allocate(orch.db, zone_id, None, None)  # type: ignore[arg-type]
    try:
        async with orch.db.sessions() as session:
            account = await _system_account(session)
            macs = await _last_macs(session, zone_id, role)
            rng = await session.get_one(VlanIpRange, ip.vlan_range_id)
            vm = VmInstance(
                name=f"{NAME_PREFIX[role]}-new-{new_mac('00:00')}",
                type=TYPE_OF_ROLE[role],
                state="Stopped",
                account_id=account.id,
                domain_id=account.domain_id,
                zone_id=zone_id,
                cpu_number=CPU,
                cpu_speed=CPU_MHZ,
                memory=MEMORY_MIB,
            )
            session.add(vm)
            await session.flush()
            vm.name = vm.host_name = vm.display_name = f"{NAME_PREFIX[role]}-{vm.id}-VM"
            session.add_all(
                [
                    Nic(
                        vm_id=vm.id,
                        traffic_type="Control",
                        netmask="255.255.255.0",
                        mac=macs.get("Control") or new_mac("0e:00"),
                        device_id=0,
                    ),
                    Nic(
                        vm_id=vm.id,
                        traffic_type="Public",
                        ip_address=ip.address,
                        netmask=rng.netmask,
                        gateway=rng.gateway,
                        mac=macs.get("Public") or new_mac("06:00"),
                        device_id=1,
                        is_default=True,
                    ),
                ]
            )
            svm = SystemVm(
                vm_id=vm.id,
                zone_id=zone_id,
                role=role,
                public_ip_id=ip.id,
                lock_owner=orch.owner,
                lock_expires=utcnow() + LEASE,
            )
            session.add(svm)
            await session.commit()
            return svm.id
    except IntegrityError:
        await addresses.release(orch.db, ip.id)
        return None  # another server created it first


async def _last_macs(session, zone_id: int, role: str) -> dict[str, str]:
    """The NIC MACs of the zone's last system VM of role, if it is gone: its successor
    takes them, so a host whose neighbour table still maps the control address the
    successor may get to the old MAC reaches the new VM at once, not when that entry
    expires (half a minute and more). The same reason routers keep theirs."""
    last = await session.scalar(
        select(SystemVm.vm_id)
        .where(SystemVm.zone_id == zone_id, SystemVm.role == role, SystemVm.removed.is_not(None))
        .order_by(SystemVm.id.desc())
        .limit(1)
    )
    if last is None:
        return {}
    nics = (await session.scalars(select(Nic).where(Nic.vm_id == last))).all()
    macs = {n.traffic_type: n.mac for n in nics}
    taken = set(
        (
            await session.scalars(
                select(Nic.mac).where(Nic.mac.in_(list(macs.values())), Nic.live())
            )
        ).all()
    )
    return {kind: mac for kind, mac in macs.items() if mac not in taken}


async def start(orch, svm_id: int, avoid: frozenset[int] = frozenset()) -> None:
    """Place and start it, wait for its agent, push its whole document (lease held)."""
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        try:
            host = await allocator.place(session, vm, avoid=avoid)
        except ApiError:
            await session.rollback()
            await _set(orch, svm_id, "Error", last_error="no host has room")
            raise
        await session.commit()  # the allocator's zone lock ends here
        driver = orch.driver(host)
        try:
            await driver.prepare()
        except HostError as exc:
            vm.host_id, vm.state = None, "Error"
            await session.commit()
            raise ApiError(530, f"host {host.name} cannot run {vm.name}: {exc}") from exc
        async with orch.host_lock(host.id):
            await allocator.lock_host(session, host.id)
            svm.control_ip = await free_control_ip(session, host.id, driver.control_network)
            await session.commit()
        nics = {
            n.traffic_type: n
            for n in (
                await session.scalars(select(Nic).where(Nic.vm_id == vm.id, Nic.live()))
            ).all()
        }
        nics["Control"].ip_address = svm.control_ip
        public = nics["Public"]
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{public.netmask}").prefixlen
        plan = RouterPlan(
            name=vm.name,
            nics=(
                NicPlan("eth0", nics["Control"].mac, "control"),
                NicPlan(
                    "eth1",
                    public.mac,
                    "public",
                    PUBLIC_VNI,
                    address=f"{public.ip_address}/{prefix}",
                ),
            ),
            control_ip=ipaddress.IPv4Interface(
                f"{svm.control_ip}/{driver.control_network.prefixlen}"
            ),
            certs=orch.ca.issue_agent(vm.name, svm.control_ip),
            cpu_number=vm.cpu_number,
            memory_mib=vm.memory,
            role=svm.role,
            gateway=public.gateway,
        )
        svm.applied_hash = svm.doc_hash = None
        await session.commit()
        name = vm.name
    try:
        await driver.start_router(plan)
        async with orch.db.sessions() as session:
            svm, vm = await _rows(session, svm_id)
            client = await orch.agent(host, vm, svm)  # type: ignore[arg-type]
        await client.wait_healthy(AGENT_HEALTH_TIMEOUT)
    except Exception as exc:
        await _set(orch, svm_id, "Error", last_error=f"{type(exc).__name__}: {exc}")
        raise ApiError(530, f"{name} did not start on host {host.name}: {exc}") from exc
    await _set(orch, svm_id, "Running")
    try:
        await push(orch, svm_id, force=True)
    except (SystemVmRefused, SystemVmUnreachable) as exc:
        raise ApiError(530, str(exc)) from exc


async def stop(orch, svm_id: int) -> None:
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        vm.state = "Stopping"
        await session.commit()
    if host is not None:
        await orch.driver(host).stop(vm.name)
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        vm.state, vm.last_host_id, vm.host_id = "Stopped", vm.host_id, None
        svm.applied_hash, svm.active_sessions = None, 0
        await session.commit()


async def destroy(orch, svm_id: int) -> None:
    """Remove it from its host, its rows, and give its public address back."""
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        ip_id = svm.public_ip_id
    if host is not None:
        try:
            await orch.driver(host).destroy(vm.name)
        except HostError as exc:  # the host may be gone: the rows go anyway
            log.warning("destroying %s on %s: %s", vm.name, host.name, exc)
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        for nic in (await session.scalars(select(Nic).where(Nic.vm_id == vm.id, Nic.live()))).all():
            nic.remove()
        vm.state, vm.host_id = "Destroyed", None
        vm.remove()
        svm.remove()
        await session.commit()
    if ip_id is not None:
        await addresses.release(orch.db, ip_id)


async def recreate(orch, svm_id: int, reason: str) -> int | None:
    """Replace a dead system VM: destroyed, and a new one started on a healthy host (the
    old host avoided when there is another). Returns the new one's id."""
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        zone_id, role, name, old_host = svm.zone_id, svm.role, vm.name, vm.host_id
    await destroy(orch, svm_id)
    new_id = await create(orch, zone_id, role)
    if new_id is None:
        return None
    async with hold(orch, new_id, timeout=1.0):
        await _start_avoiding(orch, new_id, frozenset({old_host} if old_host else ()))
    async with orch.db.sessions() as session:
        _svm, vm = await _rows(session, new_id)
        new_name = vm.name
    await orch.record_event(
        f"{EVENT_PREFIX[role]}.RECREATE",
        f"recreated {LABEL[role]} {name} as {new_name} ({reason})",
        None,
        None,
    )
    return new_id


async def _start_avoiding(orch, svm_id: int, avoid: frozenset[int]) -> None:
    try:
        await start(orch, svm_id, avoid=avoid)
    except ApiError as exc:
        if exc.code != INSUFFICIENT_CAPACITY or not avoid:
            raise
        await start(orch, svm_id)


# -- documents and status ------------------------------------------------------------------


async def push(orch, svm_id: int, *, force: bool = False) -> int:
    """Push the system VM's document (lease held) unless the agent has this content
    already; returns the generation it runs."""
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        if vm.state != "Running" or vm.host_id is None:
            raise SystemVmUnreachable(f"{vm.name} is {vm.state}")
        host = await session.get_one(Host, vm.host_id)
        zone = await session.get_one(Zone, svm.zone_id)
        ip = await session.get(PublicIp, svm.public_ip_id) if svm.public_ip_id else None
        data = await DOCUMENTS[svm.role](
            DocumentInputs(
                orch, session, zone, vm, svm, ip.address if ip else None, orch.driver(host)
            )
        )
        doc_hash = digest(data)
        if doc_hash == svm.doc_hash and svm.applied_hash and not force:
            return svm.applied_generation
        generation = max(svm.generation, svm.applied_generation) + 1
        data["generation"] = generation
        body = orjson.dumps(data)
        client = await orch.agent(host, vm, svm)  # type: ignore[arg-type]
    try:
        reply = await client.put_body(body)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, aiohttp's errors
        await _set(orch, svm_id, generation=generation, last_error=f"{type(exc).__name__}: {exc}")
        raise SystemVmUnreachable(f"{vm.name} did not answer: {type(exc).__name__}: {exc}") from exc
    if not reply.ok:
        text = json.dumps(reply.body)[:2000]
        await _set(orch, svm_id, generation=generation, last_error=text)
        raise SystemVmRefused(f"{vm.name} refused its document: {text}")
    await _set(
        orch,
        svm_id,
        generation=generation,
        applied_generation=generation,
        applied_hash=hashlib.sha256(body).hexdigest(),
        doc_hash=doc_hash,
        last_seen=utcnow(),
        last_error=None,
    )
    return generation


async def push_zone(orch, zone_id: int, role: str, *, force: bool = False) -> int | None:
    """Push the zone's running system VM of role its current document (for modules
    whose change it carries: the storage VM's images); None when none runs."""
    async with orch.db.sessions() as session:
        found = await live_row(session, zone_id, role)
    if found is None or found[1].state != "Running":
        return None
    async with hold(orch, found[0].id):
        return await push(orch, found[0].id, force=force)


async def look(orch, svm_id: int) -> health.Status:
    """Ask the agent for its status; record what it said on the row."""
    async with orch.db.sessions() as session:
        svm, vm = await _rows(session, svm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        expected = svm.applied_generation
    if host is None or vm.state != "Running":
        return health.Status(False, error=f"{vm.name} is {vm.state}")
    try:
        client = await orch.agent(
            host,
            vm,
            svm,  # type: ignore[arg-type]
            timeout=health.STATUS_TIMEOUT,
        )
        reply = await client.status(timeout=health.STATUS_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means: did not answer
        return await _silent(orch, svm_id, f"{type(exc).__name__}: {exc}")
    if not reply.ok or not isinstance(reply.body, dict):
        return await _silent(orch, svm_id, f"HTTP {reply.status}: {str(reply.body)[:300]}")
    body = reply.body
    found = health.Status(
        True,
        body.get("applied_generation"),
        body.get("document_hash"),
        bool(body.get("converged")),
        checks=health.checks_from(body, expected),
    )
    proxy = (body.get("services") or {}).get("console_proxy") or {}
    await _set(
        orch,
        svm_id,
        last_seen=utcnow(),
        version=str(body.get("version") or "1")[:64],
        health=json.dumps(found.checks),
        active_sessions=int(proxy.get("activeviewersessions") or 0),
    )
    return found


async def _silent(orch, svm_id: int, error: str) -> health.Status:
    """A look that got no answer: listSystemVms shows the agent's check failed."""
    check = {
        "checkname": "agent",
        "checktype": "basic",
        "success": False,
        "lastupdated": date(utcnow()),
        "details": error,
    }
    await _set(orch, svm_id, health=json.dumps([check]))
    return health.Status(False, error=error)


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
        _svm, vm = await _rows(session, svm_id)
        name = vm.name
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
