"""Signed heartbeats: what a router's agent last reported, on its router row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

Written from mgmt.db.models.compute.Router (tests/mgmt/db checks that the two
agree). Existing routers have had no heartbeat: every column starts empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("last_heartbeat", TIMESTAMP),
    ("heartbeat_seq", sa.BigInteger()),
    ("heartbeat_interval", sa.Float()),
    ("heartbeat_generation", sa.Integer()),
    ("heartbeat_hash", sa.String(length=64)),
    ("heartbeat_converged", sa.Boolean()),
    ("heartbeat_error", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routers") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
