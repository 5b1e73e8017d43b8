"""User instance life cycle: deploy, start, stop, reboot, destroy, expunge, recover.

The instance's rows (state ``Starting``, its NIC with a reserved address) are
written first; then the network is implemented, the router learns the
instance (DHCP host, DNS name, metadata) before the instance asks for its
lease, and the instance starts on a host the allocator picks.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from sqlalchemy import select, update

from mgmt.api.errors import ApiError
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.networks import Network
from mgmt.db.models.systemvms import VmConsole
from mgmt.db.sealing import VNC_PASSWORD
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration import allocator, networks, sync
from mgmt.orchestration.hosts.driver import HostError, InstancePlan, NicPlan, VncPlan
from mgmt.orchestration.placement import free_vnc_port, retrying, vni_of

log = logging.getLogger("skiff.orchestration")


async def _load(session, vm_id: int) -> tuple[VmInstance, list[Nic]]:
    vm = await session.get_one(VmInstance, vm_id)
    nics = list((await session.scalars(
        select(Nic).where(Nic.vm_id == vm_id, Nic.live()).order_by(Nic.device_id))).all())
    return vm, nics


async def _set(orch, vm_id: int, **values) -> None:
    async with orch.db.sessions() as session:
        vm = await session.get_one(VmInstance, vm_id)
        for key, value in values.items():
            setattr(vm, key, value)
        await session.commit()


async def _push(orch, nics: list[Nic]) -> None:
    """Bring the routers of the instance's networks up to date (its DHCP entry etc.)."""
    for network_id in {n.network_id for n in nics if n.network_id}:
        try:
            await sync.apply_network(orch, network_id)
        except (sync.RouterRefused, sync.RouterUnreachable) as exc:
            raise ApiError(530, str(exc)) from exc


async def start(orch, vm_id: int, prefer_host: int | None = None) -> None:
    """Implement its networks, update their routers, place and start the instance."""
    async with orch.db.sessions() as session:
        vm, nics = await _load(session, vm_id)
        vm.state = "Starting"
        await session.commit()
    for network_id in {n.network_id for n in nics if n.network_id}:
        await networks.implement(orch, network_id)
    await _push(orch, nics)
    async with orch.db.sessions() as session:
        vm, nics = await _load(session, vm_id)
        host = await session.get(Host, prefer_host) if prefer_host else None
        if host is None or host.state != "Up" or host.resource_state != "Enabled":
            try:
                host = await allocator.place(session, vm)
            except ApiError:
                vm.state = "Stopped" if vm.last_host_id else "Error"
                await session.commit()
                raise
        vm.host_id = host.id
        await session.commit()
        nets = {n.id: n for n in (await session.scalars(select(Network).where(
            Network.id.in_([n.network_id for n in nics if n.network_id])))).all()}
        plan = InstancePlan(
            name=vm.name, hostname=vm.host_name or vm.name,
            nics=tuple(NicPlan(f"eth{n.device_id}", n.mac, "guest", vni_of(nets[n.network_id]))
                       for n in nics if n.network_id in nets),
            cpu_number=vm.cpu_number, memory_mib=vm.memory)
    driver = orch.driver(host)
    try:
        await driver.prepare()
        plan = dataclasses.replace(plan, vnc=await _vnc(orch, vm_id, host, driver))
        for network in nets.values():
            await driver.plug_segment(vni_of(network), await orch.peers(network.id, host.id))
        await driver.start_instance(plan)
        for network in nets.values():
            await orch.wire_segment(network.id, vni_of(network))
    except (HostError, OSError, RuntimeError, LookupError) as exc:
        await _set(orch, vm_id, state="Error")
        raise ApiError(530, f"instance {vm.name} did not start on host {host.name}: "
                       f"{exc}") from exc
    await _set(orch, vm_id, state="Running", started=utcnow())


async def _vnc(orch, vm_id: int, host: Host, driver) -> VncPlan | None:
    """The instance's VNC display on its host (setting ``vm.vnc.enabled``): a free port
    on the host's control address and a new password, kept (sealed) in ``vm_consoles``
    for createConsoleEndpoint. Chosen under the host's lock, as control addresses are."""
    await _forget_display(orch, vm_id)
    async with orch.db.sessions() as session:
        if not await get_setting(session, "vm.vnc.enabled"):
            return None
    password = secrets.token_urlsafe(6)  # 8 characters: all RFB uses

    async def insert() -> int:
        async with orch.host_lock(host.id), orch.db.sessions() as session:
            await allocator.lock_host(session, host.id)
            port = await free_vnc_port(session, host.id)
            session.add(VmConsole(vm_id=vm_id, host_id=host.id, port=port,
                                  password=orch.sealer.seal(password, VNC_PASSWORD)))
            await session.commit()
            return port

    return VncPlan(driver.control_address, await retrying(insert, "VNC port"), password)


async def _forget_display(orch, vm_id: int) -> None:
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(VmConsole).where(
            VmConsole.vm_id == vm_id, VmConsole.live()).values(removed=utcnow()))


async def stop(orch, vm_id: int) -> None:
    async with orch.db.sessions() as session:
        vm, _ = await _load(session, vm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        vm.state = "Stopping"
        await session.commit()
    if host is not None:
        try:
            await orch.driver(host).stop(vm.name)
        except HostError as exc:
            await _set(orch, vm_id, state="Running")
            raise ApiError(530, f"instance {vm.name} did not stop: {exc}") from exc
    await _forget_display(orch, vm_id)
    await _set(orch, vm_id, state="Stopped", last_host_id=vm.host_id, host_id=None)


async def reboot(orch, vm_id: int) -> None:
    async with orch.db.sessions() as session:
        vm, _ = await _load(session, vm_id)
        host_id = vm.host_id
    await stop(orch, vm_id)
    await start(orch, vm_id, prefer_host=host_id)


async def destroy(orch, vm_id: int, expunge: bool) -> None:
    """Stop it; the router forgets it. Its address stays reserved unless expunged."""
    async with orch.db.sessions() as session:
        vm, nics = await _load(session, vm_id)
        running = vm.host_id is not None
    if running:
        await stop(orch, vm_id)
    await _set(orch, vm_id, state="Destroyed")
    await _push(orch, nics)
    if expunge:
        await expunge_vm(orch, vm_id)


async def expunge_vm(orch, vm_id: int) -> None:
    async with orch.db.sessions() as session:
        vm, nics = await _load(session, vm_id)
        host_id = vm.last_host_id
        vm.state = "Expunging"
        await session.commit()
    if host_id is not None:
        async with orch.db.sessions() as session:
            host = await session.get(Host, host_id)
        if host is not None:
            try:
                await orch.driver(host).destroy(vm.name)
            except HostError as exc:
                log.warning("expunging %s on %s: %s", vm.name, host.name, exc)
    async with orch.db.sessions() as session:
        vm, nics = await _load(session, vm_id)
        for nic in nics:
            nic.remove()
        vm.state = "Expunging"
        vm.remove()
        await session.commit()


async def recover(orch, vm_id: int) -> None:
    await _set(orch, vm_id, state="Stopped")
    async with orch.db.sessions() as session:
        _, nics = await _load(session, vm_id)
    await _push(orch, nics)
