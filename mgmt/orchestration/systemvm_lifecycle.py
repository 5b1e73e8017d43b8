"""A system VM's life cycle: create, start, stop, destroy, recreate, push, look.

A system VM is a ``vm_instances`` row of type ``SecondaryStorageVm`` (``s-<id>-VM``,
agent role ``storage``) or ``ConsoleProxy`` (``v-<id>-VM``, role ``console``) and a
``system_vms`` row; the VM's name is its appliance id, in its certificate. Two
NICs: control (eth0, a link-local address on its host, as a router's) and public
(eth1, an address of the zone's public range owned by the system: no account, no
network). Starting one is a router's start with another role: a host, a control
address, a fresh certificate, the driver's start, the agent's health, the whole
document (systemvm_documents.DOCUMENTS) pushed.

Work on one system VM is serialised across management servers by a lease in its
row (``hold``): every function here but ``create`` (which takes it for its new row)
expects its caller to hold it. The zone-level work (which zones get system VMs, the
reconcile pass) is mgmt.orchestration.systemvms.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from mgmt.api.errors import ApiError
from mgmt.commands.common import date
from mgmt.db.models import Account, AccountType, Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host, PublicIp, VlanIpRange
from mgmt.db.models.systemvms import TYPE_OF_ROLE, SystemVm
from mgmt.db.types import utcnow
from mgmt.orchestration import addresses, allocator, health
from mgmt.orchestration.hosts.driver import PUBLIC_VNI, HostError, NicPlan, RouterPlan
from mgmt.orchestration.locks import LockTimeout
from mgmt.orchestration.placement import free_control_ip, new_mac
from mgmt.orchestration.systemvm_documents import DOCUMENTS, DocumentInputs

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
        doc_hash = orch.fingerprints.document(data)
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
        applied_hash=orch.fingerprints.sent(body),
        doc_hash=doc_hash,
        last_seen=utcnow(),
        last_error=None,
    )
    return generation


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
        orch.fingerprints.reported(body.get("document_hash")),
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
