"""Revision 0009 (system VMs, instances' VNC displays) goes down and up again."""

from __future__ import annotations

from alembic import command as alembic_command
from sqlalchemy import inspect

from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade


def _downgrade_below_0009(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0009-1")


def _shape(connection) -> tuple[set[str], set[str]]:
    found = inspect(connection)
    return (set(found.get_table_names()), {c["name"] for c in found.get_columns("vm_instances")})


async def test_revision_0009_downgrades_and_upgrades_again(db_url):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_below_0009)
        async with db.engine.connect() as conn:
            tables, columns = await conn.run_sync(_shape)
        assert "system_vms" not in tables and "vnc_port" not in columns
        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
        async with db.engine.connect() as conn:
            tables, columns = await conn.run_sync(_shape)
        assert "system_vms" in tables and {"vnc_port", "vnc_password"} <= columns
    finally:
        await db.close()
