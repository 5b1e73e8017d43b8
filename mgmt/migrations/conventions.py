"""Schema conventions the hand-written revisions share.

Every table has the columns of mgmt.db.models.core.Common, named constraints
and indexes, and "live" unique indexes that ignore soft-deleted rows. Past
revisions call these helpers, so they are frozen: changing one would change
what an old revision creates. Add a new helper instead of editing one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

LIVE = sa.text("removed IS NULL")
TIMESTAMP = sa.DateTime(timezone=True)


def common(table: str) -> list[sa.Column | sa.Constraint]:
    """id, uuid, created, removed, as mgmt.db.models.core.Common declares them."""
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("uuid", name=f"uq_{table}_uuid"),
    ]


def fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def indexes(table: str, *columns: str) -> None:
    """Indexes on created, removed and ``columns``, named ix_<table>_<column>."""
    for column in ("created", "removed", *columns):
        op.create_index(f"ix_{table}_{column}", table, [column])


def live_unique(name: str, table: str, *columns: str) -> None:
    """A unique index over rows that are not soft-deleted."""
    op.create_index(
        name, table, list(columns), unique=True, sqlite_where=LIVE, postgresql_where=LIVE
    )
