"""The migration builds the models' schema on both dialects; engine settings; soft delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mgmt.db.engine import Database, async_url, database_url, open_database
from mgmt.db.migrate import current_revision, head_revision
from mgmt.db.models import Account, Base, Domain, Zone

TABLES = {
    "domains", "roles", "accounts", "users", "projects", "project_accounts",
    "api_sessions", "zones", "async_jobs", "events", "configuration",
}


def _schema_diff(conn: Connection) -> list[Any]:
    return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def _check_fresh_schema(url: str) -> None:
    db = await open_database(url)
    try:
        async with db.engine.connect() as conn:
            assert TABLES | {"alembic_version"} <= await conn.run_sync(_tables)
            assert await conn.run_sync(_schema_diff) == []
        assert await current_revision(db.engine) == head_revision()
    finally:
        await db.close()
    # A second open finds the schema at head and changes nothing.
    again = await open_database(url)
    await again.close()


async def test_fresh_sqlite_gets_the_whole_schema(tmp_path: Path) -> None:
    await _check_fresh_schema(database_url(tmp_path / "home", None))
    assert (tmp_path / "home" / "skiff.db").exists()


async def test_fresh_postgresql_gets_the_whole_schema(pg_empty_url: str) -> None:
    await _check_fresh_schema(pg_empty_url)


async def _open_together(url: str) -> None:
    databases = await asyncio.gather(*(open_database(url) for _ in range(3)))
    for db in databases:
        assert await current_revision(db.engine) == head_revision()
        await db.close()


async def test_servers_starting_together_migrate_one_at_a_time(pg_empty_url: str) -> None:
    await _open_together(pg_empty_url)


async def test_sqlite_opened_together_migrates_once(tmp_path: Path) -> None:
    await _open_together(f"sqlite:///{tmp_path / 'x.db'}")


def test_database_url() -> None:
    home = Path("/var/lib/skiff")
    assert database_url(home, None) == "sqlite+skiff:////var/lib/skiff/skiff.db"
    assert database_url(home, "postgresql://u:p@h:5433/db") == "postgresql+asyncpg://u:p@h:5433/db"
    assert database_url(home, "postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert database_url(home, "postgresql+asyncpg://u@/db?host=/s") == (
        "postgresql+asyncpg://u@/db?host=/s"
    )
    assert database_url(home, "sqlite:////tmp/x.db") == "sqlite+skiff:////tmp/x.db"
    assert async_url("/tmp/y.db") == "sqlite+skiff:////tmp/y.db"
    with pytest.raises(ValueError, match="mysql"):
        database_url(home, "mysql://u@h/db")


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
            assert (await conn.scalar(text("PRAGMA foreign_keys"))) == 1
            assert (await conn.scalar(text("PRAGMA busy_timeout"))) >= 1000
    finally:
        await db.close()
    assert db.dialect == "sqlite"


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.sessions() as session, session.begin():
            session.add(Account(name="orphan", type=0, domain_id=9999, role_id=9999))


async def test_timestamps_are_utc_aware_and_soft_delete_keeps_the_row(db: Database) -> None:
    before = datetime.now(UTC)
    async with db.sessions() as session, session.begin():
        zone = Zone(name="z1")
        session.add(zone)
    assert len(zone.uuid) == 36 and zone.removed is None
    async with db.sessions() as session, session.begin():
        zone = await session.get_one(Zone, zone.id)
        assert zone.created.tzinfo is not None
        assert before - timedelta(seconds=5) <= zone.created <= datetime.now(UTC)
        zone.remove()
        removed_at = zone.removed
    async with db.sessions() as session:
        again = await session.scalar(select(Zone).where(Zone.uuid == zone.uuid))
        assert again is not None and again.removed == removed_at
        assert again.removed is not None and again.removed.utcoffset() == timedelta(0)
        assert await session.scalar(select(Zone).where(Zone.name == "z1", Zone.live())) is None


async def test_non_utc_input_is_stored_as_the_same_instant(db: Database) -> None:
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with db.sessions() as session, session.begin():
        session.add(Zone(name="z", created=plus_two))
    async with db.sessions() as session:
        zone = await session.scalar(select(Zone).where(Zone.name == "z"))
        assert zone is not None
        assert zone.created == plus_two and zone.created.tzinfo == UTC
    with pytest.raises(Exception, match="timezone-aware"):
        async with db.sessions() as session, session.begin():
            session.add(Zone(name="naive", created=datetime(2026, 1, 1)))


async def test_live_names_are_unique_but_a_removed_name_can_be_reused(db: Database) -> None:
    async with db.sessions() as session, session.begin():
        session.add(Domain(name="ROOT", path="ROOT", level=0))
    with pytest.raises(IntegrityError):
        async with db.sessions() as session, session.begin():
            session.add(Domain(name="ROOT", path="ROOT", level=0))
    async with db.sessions() as session, session.begin():
        root = await session.scalar(select(Domain).where(Domain.path == "ROOT"))
        assert root is not None
        root.remove()
    async with db.sessions() as session, session.begin():
        session.add(Domain(name="ROOT", path="ROOT", level=0))
    async with db.sessions() as session:
        rows = (await session.scalars(select(Domain).where(Domain.path == "ROOT"))).all()
        assert sorted(r.removed is None for r in rows) == [False, True]
