"""Network life cycle: implement on first use, restart, shut down.

As in CloudStack, an isolated network is implemented when its first instance
is deployed (or a rule needs its router): a source-NAT public address, a VXLAN
id, the router (two for a redundant offering) started on a host, and the
whole document pushed. Implementing an implemented network with a running
router changes nothing.

Several management servers may implement one network at once (two calls on
two servers that each find it not implemented). The in-process lock does not
see the other server, so each step settles the race in the database: of two
source-NAT addresses taken at once one is given back, the router's guest NIC
(unique per network and address) lets one server create the router, and a
router is started under its lock, by the server that finds it not running.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mgmt.db.models.catalog import NetworkOfferingService, offers_redundant_router
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import (
    FirewallRule,
    LbMember,
    LbPolicy,
    RemoteAccessVpn,
    VpnConnection,
    VpnGateway,
)
from mgmt.db.types import utcnow
from mgmt.orchestration import addresses, routers
from mgmt.orchestration.placement import vni_of

_locks: dict[int, asyncio.Lock] = {}


def _lock(network_id: int) -> asyncio.Lock:
    return _locks.setdefault(network_id, asyncio.Lock())


async def live_routers(session, network_id: int) -> list[tuple[Router, VmInstance]]:
    rows = await session.execute(
        select(Router, VmInstance).join(VmInstance, VmInstance.id == Router.vm_id)
        .where(Router.network_id == network_id, Router.live(), VmInstance.live())
        .order_by(Router.id))
    return [(r, v) for r, v in rows.all()]


def _source_nat(network_id: int):
    return select(PublicIp).where(
        PublicIp.network_id == network_id, PublicIp.source_nat.is_(True), PublicIp.live(),
        PublicIp.state == "Allocated").order_by(PublicIp.id).limit(1)


async def source_nat_ip(orch, network: Network) -> PublicIp:
    async with orch.db.sessions() as session:
        snat = await session.scalar(_source_nat(network.id))
    if snat is not None:
        return snat
    mine = await addresses.allocate(orch.db, network.zone_id, network.account_id, network.id,
                                    source_nat=True)
    # Another server may have taken one at the same time. With the network's row
    # locked (a no-op UPDATE: a row lock on PostgreSQL, the write lock on SQLite)
    # these checks run one at a time, so "give mine back if there is another"
    # leaves exactly one.
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Network).where(Network.id == network.id)
                              .values(state=Network.state))
        other = await session.scalar(_source_nat(network.id).where(PublicIp.id != mine.id))
        if other is None:
            return mine
        await addresses.release_in(session, mine.id)
        return other


async def _start(orch, router_id: int) -> None:
    """Start the router unless another server started it meanwhile (it held the lock);
    away from its pair's other router's host when the zone has another."""
    async with orch.locks.hold(router_id):
        async with orch.db.sessions() as session:
            router = await session.get_one(Router, router_id)
            vm = await session.get_one(VmInstance, router.vm_id)
            if vm.state == "Running" or router.removed is not None:
                return
        avoid = await routers.peer_hosts(orch, router.network_id, router_id)
        await routers.start_avoiding(orch, router_id, frozenset(avoid))


async def _keep_wanted(orch, network_id: int, wanted: int,
                       created: list[int]) -> list[tuple[Router, VmInstance]]:
    """The network's live routers once extras are gone: when two servers implement the
    network at once, both may create a pair's routers (their own guest addresses
    do not collide). With the network's row locked these checks run one at a time,
    and each server drops the routers of its own beyond the first ``wanted``, before
    any is started."""
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Network).where(Network.id == network_id)
                              .values(state=Network.state))
        live = await live_routers(session, network_id)
        extra = [r.id for r, _v in live[wanted:] if r.id in created]
        if extra:
            await routers.discard_unstarted(session, extra)
        return [(r, v) for r, v in live if r.id not in extra]


#: VRRP priorities of a new pair: the first router wins the first election; after
#: that keepalived's nopreempt keeps whichever is primary.
PAIR_PRIORITIES = (150, 100)


async def is_redundant(session, network: Network) -> bool:
    services = (await session.scalars(select(NetworkOfferingService).where(
        NetworkOfferingService.offering_id == network.network_offering_id,
        NetworkOfferingService.live()))).all()
    return offers_redundant_router(services)


async def implement(orch, network_id: int, macs: list[dict[str, str]] | None = None) -> None:
    """Make the network run: its source NAT address and its running router, or both
    routers of a redundant pair, on two hosts where the zone has two (``macs``:
    replaced routers' NIC MACs, see routers.create)."""
    async with _lock(network_id):
        async with orch.db.sessions() as session:
            network = await session.get_one(Network, network_id)
            wanted = 2 if await is_redundant(session, network) else 1
            existing = await live_routers(session, network_id)
            if (network.state == "Implemented" and len(existing) >= wanted
                    and all(v.state == "Running" for _r, v in existing)):
                return
        snat = await source_nat_ip(orch, network)
        async with orch.db.sessions() as session:
            network = await session.get_one(Network, network_id)
            network.vlan = str(vni_of(network))
            network.state = "Implementing"
            await session.commit()
            existing = await live_routers(session, network_id)
        taken = {r.priority for r, _v in existing}
        created: list[int] = []
        for n in range(len(existing), wanted):
            priority = next(p for p in PAIR_PRIORITIES if p not in taken) if wanted > 1 else 0
            taken.add(priority)
            try:
                created.append(await routers.create(
                    orch, network, snat, (macs or [])[n] if n < len(macs or []) else None,
                    redundant=wanted > 1, priority=priority))
            except IntegrityError:  # another server created it (the gateway NIC) meanwhile
                break
        for router, vm in await _keep_wanted(orch, network_id, wanted, created):
            if vm.state != "Running":
                await _start(orch, router.id)
        async with orch.db.sessions() as session:
            network = await session.get_one(Network, network_id)
            network.state = "Implemented"
            await session.commit()


async def restart(orch, network_id: int, cleanup: bool) -> None:
    """Re-push the document; with cleanup, replace the routers by new ones first (a
    redundant pair one router at a time, the backup first, so the network stays up)."""
    async with orch.db.sessions() as session:
        existing = await live_routers(session, network_id)
        network = await session.get_one(Network, network_id)
        redundant = await is_redundant(session, network)
    if network.state == "Allocated" and not existing:
        return
    if cleanup and redundant and len(existing) > 1:
        backup_first = sorted(existing, key=lambda rv: rv[0].redundant_state == "PRIMARY")
        for router, _vm in backup_first:
            await routers.replace(orch, router.id, avoid_old_host=False)
        await implement(orch, network_id)
        return
    if cleanup:
        macs = [await routers.macs_of(orch, r.id) for r, _v in existing]
        for router, _vm in existing:
            await routers.destroy(orch, router.id)
        async with orch.db.sessions() as session:
            network = await session.get_one(Network, network_id)
            network.state = "Allocated"
            await session.commit()
        await implement(orch, network_id, macs)
        return
    await implement(orch, network_id)
    from mgmt.orchestration import sync

    for router, _vm in existing:
        await sync.converge(orch, router.id, force=True)


async def shutdown(orch, network_id: int) -> None:
    """Destroy the network's routers and give its public addresses back."""
    async with orch.db.sessions() as session:
        existing = await live_routers(session, network_id)
        ips = list((await session.scalars(select(PublicIp.id).where(
            PublicIp.network_id == network_id, PublicIp.live()))).all())
    for router, _vm in existing:
        await routers.destroy(orch, router.id)
    await _remove_services(orch, network_id)
    for ip_id in ips:
        await addresses.release(orch.db, ip_id)


async def _remove_services(orch, network_id: int) -> None:
    """Soft-delete what the network's routers carried: rules (with LB members and
    policies) and its VPN ends, so no listing shows them after the network is gone."""
    now = utcnow()
    async with orch.db.sessions() as session, session.begin():
        rules = select(FirewallRule.id).where(FirewallRule.network_id == network_id)
        gateways = select(VpnGateway.id).where(VpnGateway.network_id == network_id)
        for table, where in (
            (LbMember, LbMember.rule_id.in_(rules)),
            (LbPolicy, LbPolicy.rule_id.in_(rules)),
            (FirewallRule, FirewallRule.network_id == network_id),
            (VpnConnection, VpnConnection.vpn_gateway_id.in_(gateways)),
            (VpnGateway, VpnGateway.network_id == network_id),
            (RemoteAccessVpn, RemoteAccessVpn.network_id == network_id),
        ):
            await session.execute(update(table).where(where, table.removed.is_(None))
                                  .values(removed=now))
