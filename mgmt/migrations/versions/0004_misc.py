"""Scoped setting values, resource tags, alerts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21

Written by hand from mgmt.db.models.misc (tests/mgmt/db checks that the two
agree); like every revision it does not import the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP
from mgmt.migrations.conventions import common as _common
from mgmt.migrations.conventions import fk as _fk
from mgmt.migrations.conventions import indexes as _indexes
from mgmt.migrations.conventions import live_unique as _live_unique

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configuration_values",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        *_common("configuration_values"),
    )
    _indexes("configuration_values")
    _live_unique(
        "uq_configuration_values_live_scope", "configuration_values", "name", "scope", "scope_id"
    )

    op.create_table(
        "resource_tags",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("resource_uuid", sa.String(36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        *_common("resource_tags"),
        _fk("resource_tags", "account_id", "accounts"),
        _fk("resource_tags", "domain_id", "domains"),
    )
    _indexes("resource_tags", "resource_uuid", "account_id", "domain_id")
    op.create_index("ix_resource_tags_resource", "resource_tags", ["resource_type", "resource_id"])
    _live_unique(
        "uq_resource_tags_live_key", "resource_tags", "resource_type", "resource_id", "key"
    )

    op.create_table(
        "alerts",
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("zone_id", sa.Integer(), nullable=True),
        sa.Column("pod_id", sa.Integer(), nullable=True),
        sa.Column("sent", TIMESTAMP, nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        *_common("alerts"),
        _fk("alerts", "zone_id", "zones"),
        _fk("alerts", "pod_id", "pods"),
    )
    _indexes("alerts", "type", "zone_id", "pod_id")


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("resource_tags")
    op.drop_table("configuration_values")
