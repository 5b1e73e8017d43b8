"""Initial schema: tenancy, sessions, zones, async jobs, events, configuration.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written by hand from mgmt.db.models (tests/mgmt/db checks that the two agree).
Later revisions must not import the models: a revision describes the schema as
it was when written.
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

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        *_common("domains"),
        _fk("domains", "parent_id", "domains"),
    )
    _indexes("domains", "parent_id")
    _live_unique("uq_domains_live_path", "domains", "path")

    op.create_table(
        "roles",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        *_common("roles"),
    )
    _indexes("roles")
    _live_unique("uq_roles_live_name", "roles", "name")

    op.create_table(
        "accounts",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        *_common("accounts"),
        _fk("accounts", "domain_id", "domains"),
        _fk("accounts", "role_id", "roles"),
    )
    _indexes("accounts", "domain_id", "role_id")
    _live_unique("uq_accounts_live_domain_name", "accounts", "domain_id", "name")

    op.create_table(
        "users",
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("firstname", sa.String(255), nullable=True),
        sa.Column("lastname", sa.String(255), nullable=True),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("api_key", sa.String(255), nullable=True),
        sa.Column("secret_key", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        *_common("users"),
        _fk("users", "account_id", "accounts"),
    )
    _indexes("users", "account_id", "username")
    op.create_index("ix_users_api_key", "users", ["api_key"], unique=True)

    op.create_table(
        "projects",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_text", sa.Text(), nullable=True),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        *_common("projects"),
        _fk("projects", "account_id", "accounts"),
        _fk("projects", "domain_id", "domains"),
    )
    _indexes("projects", "account_id", "domain_id")
    _live_unique("uq_projects_live_domain_name", "projects", "domain_id", "name")

    op.create_table(
        "project_accounts",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        *_common("project_accounts"),
        _fk("project_accounts", "account_id", "accounts"),
        _fk("project_accounts", "project_id", "projects"),
    )
    _indexes("project_accounts", "account_id", "project_id")
    _live_unique("uq_project_accounts_live_member", "project_accounts", "project_id", "account_id")

    op.create_table(
        "api_sessions",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires", TIMESTAMP, nullable=False),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        *_common("api_sessions"),
        _fk("api_sessions", "user_id", "users"),
        sa.UniqueConstraint("key", name="uq_api_sessions_key"),
    )
    _indexes("api_sessions", "expires", "user_id")

    op.create_table(
        "zones",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("network_type", sa.String(16), nullable=False),
        sa.Column("dns1", sa.String(64), nullable=True),
        sa.Column("dns2", sa.String(64), nullable=True),
        sa.Column("internal_dns1", sa.String(64), nullable=True),
        sa.Column("internal_dns2", sa.String(64), nullable=True),
        sa.Column("guest_cidr", sa.String(64), nullable=True),
        sa.Column("allocation_state", sa.String(16), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        *_common("zones"),
        _fk("zones", "domain_id", "domains"),
    )
    _indexes("zones", "domain_id")
    _live_unique("uq_zones_live_name", "zones", "name")

    op.create_table(
        "async_jobs",
        sa.Column("cmd", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=True),
        sa.Column("instance_uuid", sa.String(36), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("proc_status", sa.Integer(), nullable=False),
        sa.Column("result_code", sa.Integer(), nullable=False),
        sa.Column("result_type", sa.String(16), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("resumable", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("heartbeat", TIMESTAMP, nullable=True),
        sa.Column("completed", TIMESTAMP, nullable=True),
        *_common("async_jobs"),
        _fk("async_jobs", "account_id", "accounts"),
        _fk("async_jobs", "user_id", "users"),
    )
    _indexes("async_jobs", "account_id", "instance_uuid", "user_id")
    op.create_index("ix_async_jobs_status_owner", "async_jobs", ["status", "owner"])

    op.create_table(
        "events",
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        sa.Column("resource_type", sa.String(64), nullable=True),
        sa.Column("resource_uuid", sa.String(36), nullable=True),
        *_common("events"),
        _fk("events", "account_id", "accounts"),
        _fk("events", "domain_id", "domains"),
        _fk("events", "user_id", "users"),
    )
    _indexes("events", "account_id", "domain_id", "resource_uuid", "type", "user_id")

    op.create_table(
        "configuration",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("default_value", sa.Text(), nullable=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=True),
        *_common("configuration"),
        sa.UniqueConstraint("name", name="uq_configuration_name"),
    )
    _indexes("configuration")


def downgrade() -> None:
    for table in (
        "configuration",
        "events",
        "async_jobs",
        "zones",
        "api_sessions",
        "project_accounts",
        "projects",
        "users",
        "accounts",
        "roles",
        "domains",
    ):
        op.drop_table(table)
