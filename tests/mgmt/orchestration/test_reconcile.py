"""The reconcile loop's decisions: recreate the dead, but not when many die at once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mgmt.db.bootstrap import bootstrap
from mgmt.db.models import Account, Event, Zone
from mgmt.db.models.catalog import NetworkOffering
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.networks import Network
from mgmt.orchestration import health, reconcile
from mgmt.orchestration.orchestrator import Orchestrator


@pytest.fixture
async def three_routers(db, tmp_path):
    await bootstrap(db, tmp_path)
    async with db.sessions() as session:
        account = await session.scalar(select(Account.id).limit(1))
        offering = await session.scalar(select(NetworkOffering.id).limit(1))
        zone = Zone(name="z")
        session.add(zone)
        await session.flush()
        ids = []
        for k in range(3):
            net = Network(
                name=f"n{k}",
                display_text="n",
                zone_id=zone.id,
                network_offering_id=offering,
                account_id=account,
                domain_id=1,
                cidr="10.1.1.0/24",
                gateway="10.1.1.1",
                netmask="255.255.255.0",
            )
            vm = VmInstance(
                name=f"r-{k}-VM",
                type="DomainRouter",
                state="Running",
                account_id=account,
                domain_id=1,
                zone_id=zone.id,
            )
            session.add_all([net, vm])
            await session.flush()
            router = Router(vm_id=vm.id, network_id=net.id)
            session.add(router)
            await session.flush()
            ids.append(router.id)
        await session.commit()
    orch = Orchestrator(db, tmp_path, "test-server")
    yield orch, ids


def _silent(monkeypatch, dead: set[int], recreated: list[int]):
    async def look(orch, router_id):
        if router_id in dead:
            return health.Status(False, error="no answer")
        return health.Status(True, generation=0, document_hash=None, converged=True)

    async def recreate(orch, router_id, reason):
        recreated.append(router_id)
        return router_id

    monkeypatch.setattr(reconcile.health, "look", look)
    monkeypatch.setattr(reconcile.routers, "recreate", recreate)


async def test_a_router_silent_twice_is_recreated(three_routers, monkeypatch):
    orch, ids = three_routers
    recreated: list[int] = []
    _silent(monkeypatch, {ids[0]}, recreated)
    loop = reconcile.Reconciler(orch)
    first = await loop.pass_once()
    assert first.silent == [] and recreated == []  # one miss is not death
    second = await loop.pass_once()
    assert second.recreated == [ids[0]] and recreated == [ids[0]]
    assert not second.breaker_open


async def test_many_silent_at_once_opens_the_breaker(three_routers, monkeypatch):
    orch, ids = three_routers
    recreated: list[int] = []
    _silent(monkeypatch, {ids[0], ids[1]}, recreated)
    loop = reconcile.Reconciler(orch)
    await loop.pass_once()
    report = await loop.pass_once()
    assert report.breaker_open and recreated == []
    async with orch.db.sessions() as session:
        types = (await session.scalars(select(Event.type))).all()
    assert "ROUTER.RECREATE.HALTED" in types
