"""Infrastructure: pods, clusters, hosts, physical networks, public IP ranges.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Written by hand from mgmt.db.models.infra (tests/mgmt/db checks that the two agree).
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

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pods",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("netmask", sa.String(64), nullable=False),
        sa.Column("start_ip", sa.String(64), nullable=True),
        sa.Column("end_ip", sa.String(64), nullable=True),
        sa.Column("allocation_state", sa.String(16), nullable=False),
        *_common("pods"),
        _fk("pods", "zone_id", "zones"),
    )
    _indexes("pods", "zone_id")
    _live_unique("uq_pods_live_zone_name", "pods", "zone_id", "name")

    op.create_table(
        "clusters",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("hypervisor", sa.String(32), nullable=False),
        sa.Column("cluster_type", sa.String(32), nullable=False),
        sa.Column("allocation_state", sa.String(16), nullable=False),
        sa.Column("managed_state", sa.String(16), nullable=False),
        *_common("clusters"),
        _fk("clusters", "pod_id", "pods"),
        _fk("clusters", "zone_id", "zones"),
    )
    _indexes("clusters", "pod_id", "zone_id")
    _live_unique("uq_clusters_live_pod_name", "clusters", "pod_id", "name")

    op.create_table(
        "hosts",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("password", sa.String(255), nullable=True),
        sa.Column("hypervisor", sa.String(32), nullable=False),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resource_state", sa.String(32), nullable=False),
        sa.Column("host_tags", sa.Text(), nullable=True),
        sa.Column("cpu_number", sa.Integer(), nullable=True),
        sa.Column("cpu_speed", sa.Integer(), nullable=True),
        sa.Column("memory_total", sa.BigInteger(), nullable=True),
        *_common("hosts"),
        _fk("hosts", "cluster_id", "clusters"),
        _fk("hosts", "pod_id", "pods"),
        _fk("hosts", "zone_id", "zones"),
    )
    _indexes("hosts", "cluster_id", "pod_id", "zone_id")
    _live_unique("uq_hosts_live_name", "hosts", "name")

    op.create_table(
        "physical_networks",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        sa.Column("isolation_methods", sa.String(255), nullable=True),
        sa.Column("vlan", sa.String(1024), nullable=True),
        sa.Column("broadcast_domain_range", sa.String(16), nullable=False),
        sa.Column("network_speed", sa.String(16), nullable=True),
        sa.Column("tags", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        *_common("physical_networks"),
        _fk("physical_networks", "domain_id", "domains"),
        _fk("physical_networks", "zone_id", "zones"),
    )
    _indexes("physical_networks", "domain_id", "zone_id")
    _live_unique("uq_physical_networks_live_zone_name", "physical_networks", "zone_id", "name")

    op.create_table(
        "traffic_types",
        sa.Column("physical_network_id", sa.Integer(), nullable=False),
        sa.Column("traffic_type", sa.String(32), nullable=False),
        sa.Column("kvm_network_label", sa.String(255), nullable=True),
        sa.Column("vlan", sa.String(64), nullable=True),
        *_common("traffic_types"),
        _fk("traffic_types", "physical_network_id", "physical_networks"),
    )
    _indexes("traffic_types", "physical_network_id")
    _live_unique(
        "uq_traffic_types_live_network_type",
        "traffic_types",
        "physical_network_id",
        "traffic_type",
    )

    op.create_table(
        "service_providers",
        sa.Column("physical_network_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("services", sa.Text(), nullable=False),
        sa.Column("element_uuid", sa.String(36), nullable=True),
        sa.Column("element_enabled", sa.Boolean(), nullable=False),
        *_common("service_providers"),
        _fk("service_providers", "physical_network_id", "physical_networks"),
        sa.UniqueConstraint("element_uuid", name="uq_service_providers_element_uuid"),
    )
    _indexes("service_providers", "physical_network_id")
    _live_unique(
        "uq_service_providers_live_network_name",
        "service_providers",
        "physical_network_id",
        "name",
    )

    op.create_table(
        "vlan_ip_ranges",
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=True),
        sa.Column("physical_network_id", sa.Integer(), nullable=True),
        sa.Column("vlan", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("netmask", sa.String(64), nullable=False),
        sa.Column("start_ip", sa.String(64), nullable=False),
        sa.Column("end_ip", sa.String(64), nullable=False),
        sa.Column("for_virtual_network", sa.Boolean(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("domain_id", sa.Integer(), nullable=True),
        *_common("vlan_ip_ranges"),
        _fk("vlan_ip_ranges", "account_id", "accounts"),
        _fk("vlan_ip_ranges", "domain_id", "domains"),
        _fk("vlan_ip_ranges", "physical_network_id", "physical_networks"),
        _fk("vlan_ip_ranges", "pod_id", "pods"),
        _fk("vlan_ip_ranges", "zone_id", "zones"),
    )
    _indexes(
        "vlan_ip_ranges", "account_id", "domain_id", "physical_network_id", "pod_id", "zone_id"
    )

    op.create_table(
        "public_ips",
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("vlan_range_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("network_id", sa.Integer(), nullable=True),
        sa.Column("allocated", TIMESTAMP, nullable=True),
        *_common("public_ips"),
        _fk("public_ips", "account_id", "accounts"),
        _fk("public_ips", "vlan_range_id", "vlan_ip_ranges"),
        _fk("public_ips", "zone_id", "zones"),
    )
    _indexes("public_ips", "account_id", "network_id", "vlan_range_id")
    op.create_index("ix_public_ips_zone_id_state", "public_ips", ["zone_id", "state"])
    _live_unique("uq_public_ips_live_zone_address", "public_ips", "zone_id", "address")


def downgrade() -> None:
    for table in (
        "public_ips",
        "vlan_ip_ranges",
        "service_providers",
        "traffic_types",
        "physical_networks",
        "hosts",
        "clusters",
        "pods",
    ):
        op.drop_table(table)
