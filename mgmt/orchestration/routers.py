"""Virtual router life cycle: create, start, stop, destroy, recreate.

A router is a ``vm_instances`` row of type DomainRouter, named ``r-<id>-VM``
(its appliance id: the name in its certificate), with three NICs: guest
(eth0, the network's gateway), control (eth1, a link-local address on its
host) and public (eth2, the network's source-NAT address). Starting it means:
a host, the segments on that host, a control address, a fresh certificate,
the driver's start, the agent's health, and the whole document pushed.
"""

from __future__ import annotations

import ipaddress
import logging

from sqlalchemy import select, update

from mgmt.api.errors import ApiError
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import Host, PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.db.types import utcnow
from mgmt.orchestration import allocator, sync
from mgmt.orchestration.hosts.driver import PUBLIC_VNI, HostError, NicPlan, RouterPlan
from mgmt.orchestration.placement import (
    free_control_ip,
    free_guest_ip,
    new_mac,
    retrying,
    vni_of,
)

log = logging.getLogger("skiff.orchestration")

AGENT_HEALTH_TIMEOUT = 60.0
ROUTER_CPU, ROUTER_CPU_MHZ, ROUTER_MEMORY_MIB = 1, 500, 256
INSUFFICIENT_CAPACITY = 533


async def macs_of(orch, router_id: int) -> dict[str, str]:
    """The router's NIC MACs by traffic type, for a replacement to keep them."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        return {n.traffic_type: n.mac for n in (await session.scalars(
            select(Nic).where(Nic.vm_id == router.vm_id, Nic.live()))).all()}


async def create(orch, network: Network, source_nat: PublicIp,
                 macs: dict[str, str] | None = None, *, redundant: bool = False,
                 priority: int = 0) -> int:
    """Insert the router's rows (Stopped); returns the router id.

    A replacement passes its predecessor's ``macs``: guests, the Internet side and
    the host keep their ARP entries for the router's addresses, so traffic resumes
    as soon as the new router answers instead of when those entries expire.

    A router of a redundant pair has its own guest address (VRRP and conntrackd
    speak over it); the gateway and the public addresses are the pair's shared
    ones, held by whichever is primary."""
    macs = macs or {}

    async def insert() -> int:
        async with orch.db.sessions() as session:
            rng = await session.get_one(VlanIpRange, source_nat.vlan_range_id)
            net = await session.get_one(Network, network.id)
            guest_ip = await free_guest_ip(session, net) if redundant else net.gateway
            vm = VmInstance(name=f"r-new-{new_mac('00:00')}", type="DomainRouter",
                            state="Stopped", account_id=net.account_id,
                            domain_id=net.domain_id, zone_id=net.zone_id,
                            cpu_number=ROUTER_CPU, cpu_speed=ROUTER_CPU_MHZ,
                            memory=ROUTER_MEMORY_MIB)
            session.add(vm)
            await session.flush()
            vm.name = vm.host_name = f"r-{vm.id}-VM"
            session.add_all([
                Nic(vm_id=vm.id, network_id=net.id, traffic_type="Guest",
                    ip_address=guest_ip, netmask=net.netmask,
                    mac=macs.get("Guest") or new_mac(), device_id=0),
                Nic(vm_id=vm.id, traffic_type="Control", netmask="255.255.255.0",
                    mac=macs.get("Control") or new_mac("0e:00"), device_id=1),
                Nic(vm_id=vm.id, traffic_type="Public", ip_address=source_nat.address,
                    netmask=rng.netmask, gateway=rng.gateway,
                    mac=macs.get("Public") or new_mac("06:00"),
                    device_id=2, is_default=True),
            ])
            router = Router(vm_id=vm.id, network_id=net.id, is_redundant=redundant,
                            priority=priority)
            session.add(router)
            await session.commit()
            return router.id

    if not redundant:
        return await insert()  # IntegrityError: the network has its router already
    try:
        return await retrying(insert, "router guest address")
    except LookupError as exc:
        raise ApiError(INSUFFICIENT_CAPACITY, str(exc)) from exc


async def discard_unstarted(session, router_ids: list[int]) -> None:
    """Remove routers that were created but never started (no host, nothing to stop),
    inside the caller's transaction."""
    now = utcnow()
    vm_ids = select(Router.vm_id).where(Router.id.in_(router_ids))
    await session.execute(update(Nic).where(Nic.vm_id.in_(vm_ids), Nic.removed.is_(None))
                          .values(removed=now))
    await session.execute(update(VmInstance).where(VmInstance.id.in_(vm_ids))
                          .values(state="Destroyed", removed=now))
    await session.execute(update(Router).where(Router.id.in_(router_ids)).values(removed=now))


async def start(orch, router_id: int, avoid: frozenset[int] = frozenset()) -> None:
    """Place and start the router, wait for its agent, push its whole document."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        network = await session.get_one(Network, router.network_id)
        host = await allocator.place(session, vm, avoid=avoid)
        await session.commit()  # the allocator's zone lock ends here
        driver = orch.driver(host)
        try:
            await driver.prepare()
        except HostError as exc:
            vm.host_id, vm.state = None, "Stopped"
            await session.commit()
            raise ApiError(530, f"host {host.name} cannot run routers: {exc}") from exc
        async with orch.host_lock(host.id):
            await allocator.lock_host(session, host.id)  # other servers' choices too
            control_ip = await free_control_ip(session, host.id, driver.control_network)
            router.control_ip = control_ip
            await session.commit()
        nics = {n.traffic_type: n for n in (await session.scalars(
            select(Nic).where(Nic.vm_id == vm.id, Nic.live()))).all()}
        heartbeat_url, heartbeat_interval = await orch.heartbeat(host)
        plan = RouterPlan(
            name=vm.name,
            nics=(NicPlan("eth0", nics["Guest"].mac, "guest", vni_of(network)),
                  NicPlan("eth1", nics["Control"].mac, "control"),
                  NicPlan("eth2", nics["Public"].mac, "public", PUBLIC_VNI)),
            control_ip=ipaddress.IPv4Interface(
                f"{control_ip}/{driver.control_network.prefixlen}"),
            certs=orch.ca.issue_agent(vm.name, control_ip),
            cpu_number=vm.cpu_number, memory_mib=vm.memory,
            heartbeat_url=heartbeat_url, heartbeat_interval=heartbeat_interval,
        )
        nics["Control"].ip_address = control_ip
        await session.commit()
        name, host_id = vm.name, host.id
    try:
        await driver.plug_segment(vni_of(network), await orch.peers(network.id, host_id))
        await driver.start_router(plan)
        client = await orch.agent(host, vm, router)
        await client.wait_healthy(AGENT_HEALTH_TIMEOUT)
    except Exception as exc:
        await _set_state(orch, router_id, "Error")
        raise ApiError(530, f"router {name} did not start on host {host.name}: {exc}") from exc
    await _set_state(orch, router_id, "Running")
    await sync.converge(orch, router_id, force=True)


async def _set_state(orch, router_id: int, state: str) -> None:
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        vm.state = state
        if state == "Running":
            vm.started = utcnow()
        await session.commit()


async def stop(orch, router_id: int) -> None:
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
        vm.state = "Stopping"
        await session.commit()
    if host is not None:
        await orch.driver(host).stop(vm.name)
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        vm.state, vm.last_host_id, vm.host_id = "Stopped", vm.host_id, None
        router.applied_hash, router.redundant_state = None, "UNKNOWN"
        await session.commit()


async def destroy(orch, router_id: int) -> None:
    """Stop the router and remove it and its NICs."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
    if host is not None:
        try:
            await orch.driver(host).destroy(vm.name)
        except HostError as exc:  # the host may be gone: the rows go anyway
            log.warning("destroying %s on %s: %s", vm.name, host.name, exc)
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        for nic in (await session.scalars(select(Nic).where(Nic.vm_id == vm.id,
                                                            Nic.live()))).all():
            nic.remove()
        vm.state, vm.host_id = "Destroyed", None
        vm.remove()
        router.remove()
        await session.commit()


async def replace(orch, router_id: int, *, avoid_old_host: bool) -> int:
    """Destroy the router and start a new one in its place: the same NIC MACs, the same
    place in a redundant pair; the pair's other router learns its new peer. Returns the
    new router's id."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        network = await session.get_one(Network, router.network_id)
        snat = await session.scalar(select(PublicIp).where(
            PublicIp.network_id == network.id, PublicIp.source_nat.is_(True), PublicIp.live()))
        old_host, redundant, priority = vm.host_id, router.is_redundant, router.priority
    macs = await macs_of(orch, router_id)
    await destroy(orch, router_id)
    new_id = await create(orch, network, snat, macs, redundant=redundant, priority=priority)
    avoid = await peer_hosts(orch, network.id, new_id)
    if avoid_old_host and old_host:
        avoid |= {old_host}
    await start_avoiding(orch, new_id, frozenset(avoid))
    await sync.apply_network(orch, network.id)  # the peer's document names the new router
    return new_id


async def recreate(orch, router_id: int, reason: str) -> int:
    """Replace a router that stopped answering: a new one on a healthy host (the old
    host avoided), the whole document pushed. Returns the new router's id."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        network = await session.get_one(Network, router.network_id)
    new_id = await replace(orch, router_id, avoid_old_host=True)
    await orch.record_event("ROUTER.RECREATE", f"recreated router {vm.name} as router "
                            f"{new_id} ({reason})", network.account_id, network.domain_id)
    return new_id


async def start_avoiding(orch, router_id: int, avoid: frozenset[int]) -> None:
    """Start the router away from the ``avoid`` hosts when another host has room (a
    pair's routers on two hosts; a replacement off the host that lost it), else where
    there is room."""
    try:
        await start(orch, router_id, avoid=avoid)
    except ApiError as exc:
        if exc.code != INSUFFICIENT_CAPACITY or not avoid:
            raise
        await start(orch, router_id)


async def peer_hosts(orch, network_id: int, router_id: int) -> set[int]:
    """Hosts of the network's other live routers (a redundant pair's other half)."""
    async with orch.db.sessions() as session:
        rows = await session.scalars(
            select(VmInstance.host_id).join(Router, Router.vm_id == VmInstance.id)
            .where(Router.network_id == network_id, Router.id != router_id, Router.live(),
                   VmInstance.live(), VmInstance.host_id.is_not(None)))
        return set(rows.all())
