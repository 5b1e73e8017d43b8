"""The per-router lock (a lease in the router's row): one server at a time, a dead
server's lease runs out, and a task that holds the lock may take it again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from orchestration_rows import routers_in_a_zone
from sqlalchemy import update

from mgmt.db.models.compute import Router
from mgmt.db.types import utcnow
from mgmt.orchestration.locks import LockTimeout, RouterLocks


@pytest.fixture
async def router_id(db, tmp_path) -> int:
    return (await routers_in_a_zone(db, tmp_path, 1)).router_ids[0]


async def _owner(db, router_id: int) -> str | None:
    async with db.sessions() as session:
        return (await session.get_one(Router, router_id)).lock_owner


async def _lease(db, router_id: int, owner: str, expires_in: float) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id == router_id).values(
            lock_owner=owner, lock_expires=utcnow() + timedelta(seconds=expires_in)))


async def test_another_servers_live_lease_keeps_the_router(db, router_id):
    await _lease(db, router_id, "other-server", 60)
    with pytest.raises(LockTimeout):
        async with RouterLocks(db, "me").hold(router_id, timeout=0.1):
            pass
    assert await _owner(db, router_id) == "other-server"


async def test_a_stopped_servers_lease_runs_out(db, router_id):
    await _lease(db, router_id, "crashed-server", -1)
    async with RouterLocks(db, "me").hold(router_id, timeout=0.1):
        assert await _owner(db, router_id) == "me"
    assert await _owner(db, router_id) is None


async def test_the_holding_task_may_take_the_lock_again(db, router_id):
    locks = RouterLocks(db, "me")
    async with locks.hold(router_id, timeout=0.1):
        async with locks.hold(router_id, timeout=0.1):
            assert await _owner(db, router_id) == "me"
        assert await _owner(db, router_id) == "me"  # the inner exit does not release it
    assert await _owner(db, router_id) is None

