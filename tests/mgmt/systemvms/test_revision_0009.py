"""Revision 0009 (system VMs, instances' VNC displays) goes down and up again."""

from __future__ import annotations

from alembic import command as alembic_command
from sqlalchemy import inspect

from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade

TABLES = {"system_vms", "vm_consoles"}


def _downgrade_below_0009(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0009-1")


def _tables(connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_revision_0009_downgrades_and_upgrades_again(db_url):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_below_0009)
        async with db.engine.connect() as conn:
            assert not TABLES & await conn.run_sync(_tables)
        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) >= TABLES
    finally:
        await db.close()
