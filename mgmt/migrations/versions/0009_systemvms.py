"""System VMs: the system_vms table, and vm_consoles for instances' VNC displays.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Written from mgmt.db.models.systemvms (tests/mgmt/db checks that the two agree).
Zones have no system VM yet (the next reconcile pass starts them); running
instances have no VNC display until their next start.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP, common, fk, indexes, live_unique

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "system_vms"
CONSOLES = "vm_consoles"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("control_ip", sa.String(length=64), nullable=True),
        sa.Column("public_ip_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("doc_hash", sa.String(length=64), nullable=True),
        sa.Column("applied_generation", sa.Integer(), nullable=False),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column("last_seen", TIMESTAMP, nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("health", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("active_sessions", sa.Integer(), nullable=False),
        sa.Column("lock_owner", sa.String(length=255), nullable=True),
        sa.Column("lock_expires", TIMESTAMP, nullable=True),
        *common(TABLE),
        fk(TABLE, "vm_id", "vm_instances"),
        fk(TABLE, "zone_id", "zones"),
        fk(TABLE, "public_ip_id", "public_ips"),
    )
    indexes(TABLE, "zone_id")
    live_unique("uq_system_vms_live_zone_role", TABLE, "zone_id", "role")
    live_unique("uq_system_vms_live_vm", TABLE, "vm_id")
    op.create_table(
        CONSOLES,
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        *common(CONSOLES),
        fk(CONSOLES, "vm_id", "vm_instances"),
        fk(CONSOLES, "host_id", "hosts"),
    )
    indexes(CONSOLES, "host_id")
    live_unique("uq_vm_consoles_live_vm", CONSOLES, "vm_id")
    live_unique("uq_vm_consoles_live_host_port", CONSOLES, "host_id", "port")


def downgrade() -> None:
    op.drop_table(CONSOLES)
    op.drop_table(TABLE)
