"""The SQLite driver: one hop per statement, reads placed by their cost, WAL readers
never held up by a writer's open transaction."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text

from mgmt.db.engine import open_database
from mgmt.db.models import Zone
from mgmt.db.sqlite_driver import INLINE_BELOW_S, ReadPlacement


def test_a_new_query_goes_to_the_thread_and_a_cheap_one_then_runs_inline() -> None:
    placement = ReadPlacement()
    assert not placement.inline("SELECT 1")
    placement.learn("SELECT 1", INLINE_BELOW_S / 10)
    assert placement.inline("SELECT 1")
    placement.learn("SELECT 1", 0.05)  # it grew slow: one run is enough to move it
    assert not placement.inline("SELECT 1")


async def test_reads_give_the_same_rows_inline_and_on_the_thread(tmp_path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'skiff.db'}")
    try:
        async with db.sessions() as session, session.begin():
            session.add_all([Zone(name=f"z{i}") for i in range(3)])
        query = select(Zone.name).order_by(Zone.id)
        answers = []
        for _ in range(3):  # first on the thread, then inline once it proved cheap
            async with db.sessions() as session:
                answers.append(list((await session.scalars(query)).all()))
        assert answers == [["z0", "z1", "z2"]] * 3
        placement = db.engine.dialect.dbapi.placement
        [sql] = [s for s in placement._cost if "zones.name" in s]
        assert placement.inline(sql)
    finally:
        await db.close()


async def test_a_writers_open_transaction_does_not_hold_readers_up(tmp_path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'skiff.db'}")
    try:
        async with db.sessions() as writer:
            await writer.execute(text("BEGIN IMMEDIATE"))
            writer.add(Zone(name="pending"))
            await writer.flush()
            async with db.sessions() as reader:  # sees the last commit, at once
                count = select(func.count()).select_from(Zone)
                assert await asyncio.wait_for(reader.scalar(count), 2) == 0
            await writer.commit()
        async with db.sessions() as reader:
            assert await reader.scalar(select(func.count()).select_from(Zone)) == 1
    finally:
        await db.close()
