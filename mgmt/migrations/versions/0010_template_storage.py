"""Templates on the secondary storage appliance: each zone's image state.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

Written from mgmt.db.models.catalog.TemplateZone (tests/mgmt/db checks that the
two agree). Existing rows were only ever recorded, never downloaded: they start
as NOT_DOWNLOADED from the template's own URL, attempt 0, not being deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("physical_size", sa.BigInteger(), nullable=True),
        sa.Column(
            "download_state", sa.String(length=32), nullable=False, server_default="NOT_DOWNLOADED"
        ),
        sa.Column("download_percent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False, server_default="download"),
        sa.Column("url", sa.String(length=4096), nullable=True),
        sa.Column("checksum", sa.String(length=255), nullable=True),
        sa.Column("stored_checksum", sa.String(length=255), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("deleting", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("upload_expires", TIMESTAMP, nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table("template_zones") as batch:
        for column in _columns():
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("template_zones") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
