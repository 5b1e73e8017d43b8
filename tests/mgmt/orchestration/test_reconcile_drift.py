"""Drift is what the agent runs against what the router's row says was pushed last.

With several servers a push can be in flight: the agent has applied it, the
pushing server has not recorded it yet. A reconcile pass that looks in that
moment must not take it for drift and push the same document again; it looks
again under the router's lock, when every push has ended and been recorded.
"""

from __future__ import annotations

import asyncio

import pytest
from orchestration_rows import routers_in_a_zone
from sqlalchemy import update

from mgmt.db.models.compute import Router
from mgmt.orchestration import health, reconcile
from mgmt.orchestration.locks import RouterLocks
from mgmt.orchestration.orchestrator import Orchestrator


class WatchedLocks(RouterLocks):
    """RouterLocks that tell when someone asks for a router."""

    def __init__(self, db, owner: str):
        super().__init__(db, owner)
        self.asked = asyncio.Event()

    def hold(self, router_id: int, timeout: float = 120.0):
        self.asked.set()
        return super().hold(router_id, timeout)


async def _record(db, router_id: int, generation: int, doc_hash: str) -> None:
    """What converge writes once the agent confirmed a push."""
    async with db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id == router_id).values(
            applied_generation=generation, applied_hash=doc_hash, generation=generation))


@pytest.fixture
async def world(db, tmp_path, monkeypatch):
    [router_id] = (await routers_in_a_zone(db, tmp_path, 1)).router_ids
    await _record(db, router_id, 1, "h1")
    orch = Orchestrator(db, tmp_path, "this-server")
    orch.locks = WatchedLocks(db, orch.owner)
    agent = {"generation": 2, "hash": "h2"}  # the agent has generation 2 already
    pushes: list[int] = []

    async def look(orch, rid):
        return health.Status(True, agent["generation"], agent["hash"], converged=True)

    async def converge(orch, rid, include=None, *, force=False):
        pushes.append(rid)
        return 3

    monkeypatch.setattr(reconcile.health, "look", look)
    monkeypatch.setattr(reconcile.sync, "converge", converge)
    return orch, router_id, agent, pushes


async def test_a_push_in_flight_is_not_drift(world, db):
    orch, router_id, _agent, pushes = world
    other = RouterLocks(db, "other-server")
    async with other.hold(router_id):  # the other server pushes generation 2 ...
        pass_ = asyncio.create_task(reconcile.Reconciler(orch).pass_once())
        await asyncio.wait([pass_, asyncio.create_task(orch.locks.asked.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        await _record(db, router_id, 2, "h2")  # ... and records it before letting go
    report = await pass_
    assert pushes == [] and report.drifted == []


async def test_real_drift_is_pushed_again(world):
    orch, router_id, agent, pushes = world
    agent.update(generation=7, hash="h7")  # a hand edit, a restarted agent, ...
    report = await reconcile.Reconciler(orch).pass_once()
    assert pushes == [router_id] and report.drifted == [router_id]
