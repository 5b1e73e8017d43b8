"""Orchestration: instances, NICs, routers, the keystore, network rules and VPNs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21

Written from mgmt.db.models.compute and mgmt.db.models.rules (tests/mgmt/db checks
that the two agree); like every revision it does not import the models. Existing
hosts get no pinned SSH key (the next addHost of a remote host pins one); existing
public IPs are not source NAT.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mgmt.migrations.conventions import TIMESTAMP

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "keystore",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keystore")),
        sa.UniqueConstraint("uuid", name=op.f("uq_keystore_uuid")),
    )
    op.create_index(op.f("ix_keystore_created"), "keystore", ["created"], unique=False)
    op.create_index(op.f("ix_keystore_removed"), "keystore", ["removed"], unique=False)
    op.create_index(
        "uq_keystore_live_name",
        "keystore",
        ["name"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "vpn_customer_gateways",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("cidr_list", sa.Text(), nullable=False),
        sa.Column("ipsec_psk", sa.String(length=255), nullable=False),
        sa.Column("ike_policy", sa.String(length=255), nullable=False),
        sa.Column("esp_policy", sa.String(length=255), nullable=False),
        sa.Column("ike_lifetime", sa.Integer(), nullable=False),
        sa.Column("esp_lifetime", sa.Integer(), nullable=False),
        sa.Column("dpd", sa.Boolean(), nullable=False),
        sa.Column("force_encap", sa.Boolean(), nullable=False),
        sa.Column("ike_version", sa.String(length=8), nullable=False),
        sa.Column("split_connections", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_vpn_customer_gateways_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_vpn_customer_gateways_domain_id_domains")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vpn_customer_gateways")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vpn_customer_gateways_uuid")),
    )
    op.create_index(
        op.f("ix_vpn_customer_gateways_account_id"),
        "vpn_customer_gateways",
        ["account_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_vpn_customer_gateways_created"), "vpn_customer_gateways", ["created"], unique=False
    )
    op.create_index(
        op.f("ix_vpn_customer_gateways_domain_id"),
        "vpn_customer_gateways",
        ["domain_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_vpn_customer_gateways_removed"), "vpn_customer_gateways", ["removed"], unique=False
    )
    op.create_table(
        "vpn_users",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_vpn_users_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_vpn_users_domain_id_domains")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vpn_users")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vpn_users_uuid")),
    )
    op.create_index(op.f("ix_vpn_users_account_id"), "vpn_users", ["account_id"], unique=False)
    op.create_index(op.f("ix_vpn_users_created"), "vpn_users", ["created"], unique=False)
    op.create_index(op.f("ix_vpn_users_domain_id"), "vpn_users", ["domain_id"], unique=False)
    op.create_index(op.f("ix_vpn_users_removed"), "vpn_users", ["removed"], unique=False)
    op.create_index(
        "uq_vpn_users_live_account_name",
        "vpn_users",
        ["account_id", "username"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "remote_access_vpns",
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("ip_address_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("ip_range", sa.String(length=64), nullable=False),
        sa.Column("preshared_key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_remote_access_vpns_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_remote_access_vpns_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["ip_address_id"],
            ["public_ips.id"],
            name=op.f("fk_remote_access_vpns_ip_address_id_public_ips"),
        ),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_remote_access_vpns_network_id_networks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_access_vpns")),
        sa.UniqueConstraint("uuid", name=op.f("uq_remote_access_vpns_uuid")),
    )
    op.create_index(
        op.f("ix_remote_access_vpns_account_id"), "remote_access_vpns", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_remote_access_vpns_created"), "remote_access_vpns", ["created"], unique=False
    )
    op.create_index(
        op.f("ix_remote_access_vpns_domain_id"), "remote_access_vpns", ["domain_id"], unique=False
    )
    op.create_index(
        op.f("ix_remote_access_vpns_network_id"), "remote_access_vpns", ["network_id"], unique=False
    )
    op.create_index(
        op.f("ix_remote_access_vpns_removed"), "remote_access_vpns", ["removed"], unique=False
    )
    op.create_index(
        "uq_remote_access_vpns_live_ip",
        "remote_access_vpns",
        ["ip_address_id"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "vm_instances",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("host_name", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("zone_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("last_host_id", sa.Integer(), nullable=True),
        sa.Column("service_offering_id", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("cpu_number", sa.Integer(), nullable=False),
        sa.Column("cpu_speed", sa.Integer(), nullable=False),
        sa.Column("memory", sa.Integer(), nullable=False),
        sa.Column("ha_enabled", sa.Boolean(), nullable=False),
        sa.Column("user_data", sa.Text(), nullable=True),
        sa.Column("group_name", sa.String(length=255), nullable=True),
        sa.Column("started", TIMESTAMP, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_vm_instances_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_vm_instances_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_vm_instances_host_id_hosts")
        ),
        sa.ForeignKeyConstraint(
            ["service_offering_id"],
            ["service_offerings.id"],
            name=op.f("fk_vm_instances_service_offering_id_service_offerings"),
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_vm_instances_template_id_templates")
        ),
        sa.ForeignKeyConstraint(
            ["zone_id"], ["zones.id"], name=op.f("fk_vm_instances_zone_id_zones")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_instances")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vm_instances_uuid")),
    )
    op.create_index(
        op.f("ix_vm_instances_account_id"), "vm_instances", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_vm_instances_created"), "vm_instances", ["created"], unique=False)
    op.create_index(op.f("ix_vm_instances_domain_id"), "vm_instances", ["domain_id"], unique=False)
    op.create_index(op.f("ix_vm_instances_host_id"), "vm_instances", ["host_id"], unique=False)
    op.create_index(op.f("ix_vm_instances_removed"), "vm_instances", ["removed"], unique=False)
    op.create_index(
        op.f("ix_vm_instances_service_offering_id"),
        "vm_instances",
        ["service_offering_id"],
        unique=False,
    )
    op.create_index(op.f("ix_vm_instances_state"), "vm_instances", ["state"], unique=False)
    op.create_index(
        op.f("ix_vm_instances_template_id"), "vm_instances", ["template_id"], unique=False
    )
    op.create_index(op.f("ix_vm_instances_type"), "vm_instances", ["type"], unique=False)
    op.create_index(op.f("ix_vm_instances_zone_id"), "vm_instances", ["zone_id"], unique=False)
    op.create_index(
        "uq_vm_instances_live_name",
        "vm_instances",
        ["name"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "vpn_gateways",
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("ip_address_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_vpn_gateways_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_vpn_gateways_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["ip_address_id"],
            ["public_ips.id"],
            name=op.f("fk_vpn_gateways_ip_address_id_public_ips"),
        ),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_vpn_gateways_network_id_networks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vpn_gateways")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vpn_gateways_uuid")),
    )
    op.create_index(
        op.f("ix_vpn_gateways_account_id"), "vpn_gateways", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_vpn_gateways_created"), "vpn_gateways", ["created"], unique=False)
    op.create_index(op.f("ix_vpn_gateways_domain_id"), "vpn_gateways", ["domain_id"], unique=False)
    op.create_index(
        op.f("ix_vpn_gateways_ip_address_id"), "vpn_gateways", ["ip_address_id"], unique=False
    )
    op.create_index(op.f("ix_vpn_gateways_removed"), "vpn_gateways", ["removed"], unique=False)
    op.create_index(
        "uq_vpn_gateways_live_network",
        "vpn_gateways",
        ["network_id"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "firewall_rules",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("traffic_type", sa.String(length=16), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("ip_address_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("start_port", sa.Integer(), nullable=True),
        sa.Column("end_port", sa.Integer(), nullable=True),
        sa.Column("icmp_type", sa.Integer(), nullable=True),
        sa.Column("icmp_code", sa.Integer(), nullable=True),
        sa.Column("source_cidrs", sa.Text(), nullable=True),
        sa.Column("dest_cidrs", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("related_id", sa.Integer(), nullable=True),
        sa.Column("vm_id", sa.Integer(), nullable=True),
        sa.Column("dest_ip", sa.String(length=64), nullable=True),
        sa.Column("dest_start", sa.Integer(), nullable=True),
        sa.Column("dest_end", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=4096), nullable=True),
        sa.Column("algorithm", sa.String(length=32), nullable=True),
        sa.Column("lb_protocol", sa.String(length=16), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_firewall_rules_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_firewall_rules_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["ip_address_id"],
            ["public_ips.id"],
            name=op.f("fk_firewall_rules_ip_address_id_public_ips"),
        ),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_firewall_rules_network_id_networks")
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vm_instances.id"], name=op.f("fk_firewall_rules_vm_id_vm_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firewall_rules")),
        sa.UniqueConstraint("uuid", name=op.f("uq_firewall_rules_uuid")),
    )
    op.create_index(
        op.f("ix_firewall_rules_account_id"), "firewall_rules", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_firewall_rules_created"), "firewall_rules", ["created"], unique=False)
    op.create_index(
        op.f("ix_firewall_rules_domain_id"), "firewall_rules", ["domain_id"], unique=False
    )
    op.create_index(
        op.f("ix_firewall_rules_ip_address_id"), "firewall_rules", ["ip_address_id"], unique=False
    )
    op.create_index(
        op.f("ix_firewall_rules_network_id"), "firewall_rules", ["network_id"], unique=False
    )
    op.create_index(op.f("ix_firewall_rules_purpose"), "firewall_rules", ["purpose"], unique=False)
    op.create_index(
        op.f("ix_firewall_rules_related_id"), "firewall_rules", ["related_id"], unique=False
    )
    op.create_index(op.f("ix_firewall_rules_removed"), "firewall_rules", ["removed"], unique=False)
    op.create_index(op.f("ix_firewall_rules_state"), "firewall_rules", ["state"], unique=False)
    op.create_index(op.f("ix_firewall_rules_vm_id"), "firewall_rules", ["vm_id"], unique=False)
    op.create_table(
        "nics",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=True),
        sa.Column("traffic_type", sa.String(length=16), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("netmask", sa.String(length=64), nullable=True),
        sa.Column("gateway", sa.String(length=64), nullable=True),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_nics_network_id_networks")
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vm_instances.id"], name=op.f("fk_nics_vm_id_vm_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nics")),
        sa.UniqueConstraint("uuid", name=op.f("uq_nics_uuid")),
    )
    op.create_index(op.f("ix_nics_created"), "nics", ["created"], unique=False)
    op.create_index(op.f("ix_nics_network_id"), "nics", ["network_id"], unique=False)
    op.create_index(op.f("ix_nics_removed"), "nics", ["removed"], unique=False)
    op.create_index(op.f("ix_nics_vm_id"), "nics", ["vm_id"], unique=False)
    op.create_index(
        "uq_nics_live_mac",
        "nics",
        ["mac"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_index(
        "uq_nics_live_network_ip",
        "nics",
        ["network_id", "ip_address"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "routers",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("is_redundant", sa.Boolean(), nullable=False),
        sa.Column("redundant_state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("control_ip", sa.String(length=64), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("doc_hash", sa.String(length=64), nullable=True),
        sa.Column("applied_generation", sa.Integer(), nullable=False),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column("last_seen", TIMESTAMP, nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("health", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lock_owner", sa.String(length=255), nullable=True),
        sa.Column("lock_expires", TIMESTAMP, nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_routers_network_id_networks")
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vm_instances.id"], name=op.f("fk_routers_vm_id_vm_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routers")),
        sa.UniqueConstraint("uuid", name=op.f("uq_routers_uuid")),
    )
    op.create_index(op.f("ix_routers_created"), "routers", ["created"], unique=False)
    op.create_index(op.f("ix_routers_network_id"), "routers", ["network_id"], unique=False)
    op.create_index(op.f("ix_routers_removed"), "routers", ["removed"], unique=False)
    op.create_index(
        "uq_routers_live_vm",
        "routers",
        ["vm_id"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "vpn_connections",
        sa.Column("vpn_gateway_id", sa.Integer(), nullable=False),
        sa.Column("customer_gateway_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("passive", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_vpn_connections_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["customer_gateway_id"],
            ["vpn_customer_gateways.id"],
            name=op.f("fk_vpn_connections_customer_gateway_id_vpn_customer_gateways"),
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"], ["domains.id"], name=op.f("fk_vpn_connections_domain_id_domains")
        ),
        sa.ForeignKeyConstraint(
            ["vpn_gateway_id"],
            ["vpn_gateways.id"],
            name=op.f("fk_vpn_connections_vpn_gateway_id_vpn_gateways"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vpn_connections")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vpn_connections_uuid")),
    )
    op.create_index(
        op.f("ix_vpn_connections_account_id"), "vpn_connections", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_vpn_connections_created"), "vpn_connections", ["created"], unique=False
    )
    op.create_index(
        op.f("ix_vpn_connections_customer_gateway_id"),
        "vpn_connections",
        ["customer_gateway_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_vpn_connections_domain_id"), "vpn_connections", ["domain_id"], unique=False
    )
    op.create_index(
        op.f("ix_vpn_connections_removed"), "vpn_connections", ["removed"], unique=False
    )
    op.create_index(
        op.f("ix_vpn_connections_vpn_gateway_id"),
        "vpn_connections",
        ["vpn_gateway_id"],
        unique=False,
    )
    op.create_index(
        "uq_vpn_connections_live_pair",
        "vpn_connections",
        ["vpn_gateway_id", "customer_gateway_id"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "lb_members",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["firewall_rules.id"], name=op.f("fk_lb_members_rule_id_firewall_rules")
        ),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vm_instances.id"], name=op.f("fk_lb_members_vm_id_vm_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lb_members")),
        sa.UniqueConstraint("uuid", name=op.f("uq_lb_members_uuid")),
    )
    op.create_index(op.f("ix_lb_members_created"), "lb_members", ["created"], unique=False)
    op.create_index(op.f("ix_lb_members_removed"), "lb_members", ["removed"], unique=False)
    op.create_index(op.f("ix_lb_members_rule_id"), "lb_members", ["rule_id"], unique=False)
    op.create_index(op.f("ix_lb_members_vm_id"), "lb_members", ["vm_id"], unique=False)
    op.create_index(
        "uq_lb_members_live_rule_vm_ip",
        "lb_members",
        ["rule_id", "vm_id", "ip"],
        unique=True,
        sqlite_where=sa.text("removed IS NULL"),
        postgresql_where=sa.text("removed IS NULL"),
    )
    op.create_table(
        "lb_policies",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=4096), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        sa.Column("removed", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["firewall_rules.id"], name=op.f("fk_lb_policies_rule_id_firewall_rules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lb_policies")),
        sa.UniqueConstraint("uuid", name=op.f("uq_lb_policies_uuid")),
    )
    op.create_index(op.f("ix_lb_policies_created"), "lb_policies", ["created"], unique=False)
    op.create_index(op.f("ix_lb_policies_removed"), "lb_policies", ["removed"], unique=False)
    op.create_index(op.f("ix_lb_policies_rule_id"), "lb_policies", ["rule_id"], unique=False)
    op.add_column("hosts", sa.Column("host_key", sa.Text(), nullable=True))
    op.add_column("hosts", sa.Column("last_seen", TIMESTAMP, nullable=True))
    op.add_column(
        "public_ips",
        sa.Column("source_nat", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("public_ips", sa.Column("static_nat_vm_id", sa.Integer(), nullable=True))
    op.add_column("public_ips", sa.Column("static_nat_ip", sa.String(length=64), nullable=True))
    op.create_index(
        op.f("ix_public_ips_static_nat_vm_id"), "public_ips", ["static_nat_vm_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_public_ips_static_nat_vm_id", "public_ips")
    for column in ("static_nat_ip", "static_nat_vm_id", "source_nat"):
        op.drop_column("public_ips", column)
    for column in ("last_seen", "host_key"):
        op.drop_column("hosts", column)
    for table in (
        "lb_policies",
        "lb_members",
        "vpn_connections",
        "routers",
        "nics",
        "firewall_rules",
        "vpn_gateways",
        "vm_instances",
        "remote_access_vpns",
        "vpn_users",
        "vpn_customer_gateways",
        "keystore",
    ):
        op.drop_table(table)
