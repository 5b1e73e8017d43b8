"""Catalogue: offerings, templates and ISOs, OS types.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Written by hand from mgmt.db.models.catalog (tests/mgmt/db checks that the two
agree); like every revision it does not import the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import common as _common
from mgmt.migrations.conventions import fk as _fk
from mgmt.migrations.conventions import indexes as _indexes
from mgmt.migrations.conventions import live_unique as _live_unique

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _bool(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _services(table: str, offerings: str) -> None:
    op.create_table(
        table,
        _int("offering_id"),
        _str("service", 64),
        _str("provider", 64, nullable=True),
        sa.Column("capabilities", sa.Text(), nullable=False),
        *_common(table),
        _fk(table, "offering_id", offerings),
    )
    _indexes(table, "offering_id")


def upgrade() -> None:
    op.create_table(
        "os_categories",
        _str("name", 255),
        *_common("os_categories"),
    )
    _indexes("os_categories")
    _live_unique("uq_os_categories_live_name", "os_categories", "name")

    op.create_table(
        "os_types",
        _str("description", 255),
        _int("category_id"),
        _bool("is_user_defined"),
        *_common("os_types"),
        _fk("os_types", "category_id", "os_categories"),
    )
    _indexes("os_types", "category_id")
    _live_unique("uq_os_types_live_description", "os_types", "description")

    op.create_table(
        "service_offerings",
        _str("name", 255),
        _str("display_text", 4096),
        _int("cpu_number", nullable=True),
        _int("cpu_speed", nullable=True),
        _int("memory", nullable=True),
        _bool("offer_ha"),
        _bool("limit_cpu_use"),
        _bool("is_volatile"),
        _str("storage_type", 16),
        _str("storage_tags", 4096, nullable=True),
        _str("host_tags", 4096, nullable=True),
        _bool("is_system"),
        _str("system_vm_type", 64, nullable=True),
        _bool("is_default"),
        _int("sort_key"),
        _str("state", 16),
        _int("domain_id", nullable=True),
        *_common("service_offerings"),
        _fk("service_offerings", "domain_id", "domains"),
    )
    _indexes("service_offerings", "domain_id", "name")

    op.create_table(
        "disk_offerings",
        _str("name", 255),
        _str("display_text", 4096),
        _int("disk_size_gb"),
        _bool("customized"),
        _str("storage_type", 16),
        _str("tags", 4096, nullable=True),
        _bool("is_default"),
        _int("sort_key"),
        _str("state", 16),
        _int("domain_id", nullable=True),
        *_common("disk_offerings"),
        _fk("disk_offerings", "domain_id", "domains"),
    )
    _indexes("disk_offerings", "domain_id", "name")

    op.create_table(
        "network_offerings",
        _str("name", 255),
        _str("display_text", 4096),
        _str("guest_ip_type", 16),
        _str("traffic_type", 16),
        _str("state", 16),
        _bool("is_default"),
        _bool("is_persistent"),
        _bool("specify_vlan"),
        _bool("specify_ip_ranges"),
        _bool("egress_default_policy"),
        _bool("conserve_mode"),
        _bool("for_vpc"),
        _str("availability", 16),
        _int("network_rate", nullable=True),
        _str("tags", 4096, nullable=True),
        _int("sort_key"),
        *_common("network_offerings"),
    )
    _indexes("network_offerings")
    _live_unique("uq_network_offerings_live_name", "network_offerings", "name")
    _services("network_offering_services", "network_offerings")

    op.create_table(
        "vpc_offerings",
        _str("name", 255),
        _str("display_text", 4096),
        _str("state", 16),
        _bool("is_default"),
        _int("sort_key"),
        *_common("vpc_offerings"),
    )
    _indexes("vpc_offerings")
    _live_unique("uq_vpc_offerings_live_name", "vpc_offerings", "name")
    _services("vpc_offering_services", "vpc_offerings")

    op.create_table(
        "templates",
        _str("name", 255),
        _str("display_text", 4096),
        _str("url", 2048, nullable=True),
        _str("format", 16),
        _str("hypervisor", 32, nullable=True),
        _int("os_type_id"),
        _str("checksum", 255, nullable=True),
        _bool("is_public"),
        _bool("is_featured"),
        _bool("is_extractable"),
        _bool("password_enabled"),
        _bool("requires_hvm"),
        _bool("bootable"),
        _bool("cross_zones"),
        _str("template_type", 16),
        _int("sort_key"),
        _int("account_id"),
        _int("domain_id"),
        *_common("templates"),
        _fk("templates", "account_id", "accounts"),
        _fk("templates", "domain_id", "domains"),
        _fk("templates", "os_type_id", "os_types"),
    )
    _indexes("templates", "account_id", "domain_id", "name", "os_type_id")

    op.create_table(
        "template_zones",
        _int("template_id"),
        _int("zone_id"),
        _str("status", 255),
        _bool("is_ready"),
        sa.Column("size", sa.BigInteger(), nullable=True),
        *_common("template_zones"),
        _fk("template_zones", "template_id", "templates"),
        _fk("template_zones", "zone_id", "zones"),
    )
    _indexes("template_zones", "template_id", "zone_id")
    _live_unique("uq_template_zones_live_template_zone", "template_zones", "template_id", "zone_id")


def downgrade() -> None:
    for table in (
        "template_zones",
        "templates",
        "vpc_offering_services",
        "vpc_offerings",
        "network_offering_services",
        "network_offerings",
        "disk_offerings",
        "service_offerings",
        "os_types",
        "os_categories",
    ):
        op.drop_table(table)
