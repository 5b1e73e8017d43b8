"""The per-router lock: one management server at a time works on a router.

Within a server an asyncio lock per router orders the jobs; across servers a
lease in the router's row (``lock_owner`` until ``lock_expires``) taken with
one conditional UPDATE, so two servers on one PostgreSQL never push to the
same router at once and a crashed server's lease runs out by itself.

A task that holds a router's lock may take it again (the reconcile loop checks
a router under its lock, then converges it, which takes the lock itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import or_, update

from mgmt.db.engine import Database
from mgmt.db.models.compute import Router
from mgmt.db.types import utcnow

LEASE = timedelta(seconds=120)


class LockTimeout(RuntimeError):
    pass


class RouterLocks:
    def __init__(self, db: Database, owner: str):
        self.db = db
        self.owner = owner
        self._local: dict[int, asyncio.Lock] = {}
        self._holders: dict[int, asyncio.Task] = {}

    @contextlib.asynccontextmanager
    async def hold(self, router_id: int, timeout: float = 120.0) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._holders.get(router_id) is task:
            yield  # this task holds it already: the outer hold releases it
            return
        local = self._local.setdefault(router_id, asyncio.Lock())
        async with local:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            delay = 0.02
            while not await self._take(router_id):
                if loop.time() > deadline:
                    raise LockTimeout(f"router {router_id} stayed locked by another "
                                      f"management server for {timeout:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            if task is not None:
                self._holders[router_id] = task
            try:
                yield
            finally:
                self._holders.pop(router_id, None)
                await self._release(router_id)

    async def _take(self, router_id: int) -> bool:
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                update(Router)
                .where(Router.id == router_id,
                       or_(Router.lock_owner.is_(None), Router.lock_expires < now,
                           Router.lock_owner == self.owner))
                .values(lock_owner=self.owner, lock_expires=now + LEASE)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _release(self, router_id: int) -> None:
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Router).where(Router.id == router_id, Router.lock_owner == self.owner)
                .values(lock_owner=None, lock_expires=None))
