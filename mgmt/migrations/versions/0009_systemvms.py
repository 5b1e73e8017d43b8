"""System VMs: the system_vms table, and each instance's VNC display.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Written from mgmt.db.models.systemvms.SystemVm and mgmt.db.models.compute.VmInstance
(tests/mgmt/db checks that the two agree). Zones have no system VM yet (the next
reconcile pass starts them); existing instances have no VNC display until their
next start.
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
    with op.batch_alter_table("vm_instances") as batch:
        batch.add_column(sa.Column("vnc_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("vnc_password", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_instances") as batch:
        batch.drop_column("vnc_password")
        batch.drop_column("vnc_port")
    op.drop_table(TABLE)
