"""Two management servers implementing one network at once (two associateIpAddress
calls, one on each, seen in the two-server e2e test): one source-NAT address, one
router, started once. Each server is an Orchestrator of its own; the in-process
network lock is taken away, as it does not reach across servers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from orchestration_rows import routers_in_a_zone
from sqlalchemy import func, select

from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.orchestration import networks
from mgmt.orchestration.orchestrator import Orchestrator


@pytest.fixture
async def network_id(db, tmp_path) -> int:
    """A network not implemented yet, in a zone with ten free public addresses."""
    rows = await routers_in_a_zone(db, tmp_path, 0, on_a_host=True)
    async with db.sessions() as session:
        rng = VlanIpRange(zone_id=rows.zone_id, gateway="203.0.113.1",
                          netmask="255.255.255.0", start_ip="203.0.113.10",
                          end_ip="203.0.113.19")
        session.add(rng)
        await session.flush()
        session.add_all(PublicIp(address=f"203.0.113.1{k}", zone_id=rows.zone_id,
                                 vlan_range_id=rng.id) for k in range(10))
        offering = (await session.scalars(select(Network.network_offering_id))).first()
        net = Network(name="fresh", display_text="fresh", zone_id=rows.zone_id,
                      network_offering_id=offering or 1, account_id=rows.account_id,
                      domain_id=1, cidr="10.1.1.0/24", gateway="10.1.1.1",
                      netmask="255.255.255.0")
        session.add(net)
        await session.commit()
        return net.id


@pytest.fixture
def started(monkeypatch) -> list[int]:
    """routers.start without a host: the router is Running after a few turns of the loop."""
    out: list[int] = []

    async def start(orch, router_id, avoid=frozenset()):
        out.append(router_id)
        for _ in range(20):  # let the other server run meanwhile
            await asyncio.sleep(0)
        async with orch.db.sessions() as session:
            router = await session.get_one(Router, router_id)
            (await session.get_one(VmInstance, router.vm_id)).state = "Running"
            await session.commit()

    monkeypatch.setattr(networks.routers, "start", start)
    return out


async def test_two_servers_implementing_one_network_make_one_router(
        db, tmp_path, network_id, started, monkeypatch):
    monkeypatch.setattr(networks, "_lock", lambda _network_id: contextlib.nullcontext())
    servers = [Orchestrator(db, tmp_path, owner) for owner in ("server-a", "server-b")]
    await asyncio.gather(*(networks.implement(orch, network_id) for orch in servers))
    async with db.sessions() as session:
        routers = (await session.scalars(select(Router.id).where(
            Router.network_id == network_id, Router.live()))).all()
        snat = await session.scalar(select(func.count()).select_from(PublicIp).where(
            PublicIp.network_id == network_id, PublicIp.source_nat.is_(True),
            PublicIp.state == "Allocated"))
        state = (await session.get_one(Network, network_id)).state
    assert len(routers) == 1 and started == list(routers)
    assert snat == 1 and state == "Implemented"


async def test_two_servers_implementing_one_redundant_network_make_one_pair(
        db, tmp_path, network_id, started, monkeypatch):
    """A pair's routers have their own guest addresses, so both servers' inserts
    succeed; each then drops its own routers beyond the first two, before starting."""
    monkeypatch.setattr(networks, "_lock", lambda _network_id: contextlib.nullcontext())

    async def redundant(session, network) -> bool:
        return True

    monkeypatch.setattr(networks, "is_redundant", redundant)
    servers = [Orchestrator(db, tmp_path, owner) for owner in ("server-a", "server-b")]
    await asyncio.gather(*(networks.implement(orch, network_id) for orch in servers))
    async with db.sessions() as session:
        routers = (await session.scalars(select(Router.id).where(
            Router.network_id == network_id, Router.live()))).all()
        running = await session.scalar(select(func.count()).select_from(VmInstance).where(
            VmInstance.type == "DomainRouter", VmInstance.live(),
            VmInstance.state == "Running"))
    assert len(routers) == 2 and sorted(started) == sorted(routers) and running == 2
