"""Database fixtures for the management server's tests.

``db`` is a migrated, empty database of the kind SKIFF_TEST_DB names:
``sqlite`` (default, a file in tmp_path) or ``postgresql`` (a fresh database
in a throwaway cluster that lives for the test session, unix socket only: the
``pg_cluster`` fixture of tests/conftest.py).
``make test`` runs tests/mgmt once with each.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mgmt.db.engine import Database, open_database
from mgmt.db.testing_pg import PgCluster, migrated_database, new_database
from mgmt.server.app import ManagementServer, Settings

DB_KINDS = ("sqlite", "postgresql")
DB_KIND = os.environ.get("SKIFF_TEST_DB", "sqlite").lower()
if DB_KIND not in DB_KINDS:
    raise pytest.UsageError(f"SKIFF_TEST_DB={DB_KIND!r}: use one of {', '.join(DB_KINDS)}")

@pytest.fixture
async def pg_empty_url(pg_cluster: PgCluster) -> str:
    """A new, empty PostgreSQL database (whatever SKIFF_TEST_DB says)."""
    return await new_database(pg_cluster)


@pytest.fixture(params=[DB_KIND])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a migrated database of the chosen kind; open it as often as you like."""
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        return await migrated_database(cluster)
    url = f"sqlite+skiff:///{tmp_path / 'skiff.db'}"
    migrated = await open_database(url)
    await migrated.close()
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url, migrate=False)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def live(tmp_path: Path, db_url: str) -> AsyncIterator[ManagementServer]:
    """A listening server on the database SKIFF_TEST_DB names; ``.url`` is its API."""
    server = ManagementServer(Settings(home=tmp_path / "home", port=0, db=db_url))
    await server.open()
    [server.url] = await server.listen()
    server.db_url, server.settings_home = db_url, tmp_path / "home"
    yield server
    await server.close()
