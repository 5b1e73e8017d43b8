"""The reconcile loop's decisions: recreate the dead, but not when many die at once."""

from __future__ import annotations

import pytest
from orchestration_rows import routers_in_a_zone
from sqlalchemy import select

from mgmt.db.models import Event
from mgmt.orchestration import health, reconcile
from mgmt.orchestration.orchestrator import Orchestrator


@pytest.fixture
async def three_routers(db, tmp_path):
    rows = await routers_in_a_zone(db, tmp_path, 3)
    yield Orchestrator(db, tmp_path, "test-server"), rows.router_ids


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
