"""Guest networks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21

Written by hand from mgmt.db.models.networks (tests/mgmt/db checks that the two
agree); like every revision it does not import the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "networks"
FOREIGN = {
    "zone_id": "zones",
    "network_offering_id": "network_offerings",
    "account_id": "accounts",
    "domain_id": "domains",
}


def _str(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        TABLE,
        _str("name", 255),
        _str("display_text", 4096),
        *(sa.Column(column, sa.Integer(), nullable=False) for column in FOREIGN),
        _str("cidr", 64),
        _str("gateway", 64),
        _str("netmask", 64),
        _str("start_ip", 64, nullable=True),
        _str("end_ip", 64, nullable=True),
        _str("network_domain", 255, nullable=True),
        _str("state", 32),
        _str("vlan", 255, nullable=True),
        _str("dns1", 64, nullable=True),
        _str("dns2", 64, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{TABLE}"),
        sa.UniqueConstraint("uuid", name=f"uq_{TABLE}_uuid"),
        *(
            sa.ForeignKeyConstraint(
                [column], [f"{target}.id"], name=f"fk_{TABLE}_{column}_{target}"
            )
            for column, target in FOREIGN.items()
        ),
    )
    for column in ("created", "removed", "name", *FOREIGN):
        op.create_index(f"ix_{TABLE}_{column}", TABLE, [column])


def downgrade() -> None:
    op.drop_table(TABLE)
