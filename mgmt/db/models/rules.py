"""Network rules: firewall, port forwarding, load balancing, VPN. (Revision 0006.)

As in CloudStack, one ``firewall_rules`` table holds every rule on a public IP
(``purpose`` Firewall, PortForwarding, LoadBalancing, Vpn) and egress rules; the
columns a purpose does not use stay NULL. A rule's ``state`` follows
CloudStack's: ``Add`` until the router has applied it, ``Active`` after,
``Revoke`` while its removal is being applied. A rule the router refuses is
removed again, so the database never shows it active.

VPN secrets (users' passwords, preshared keys) are sealed (mgmt.db.sealing,
revision 0008): only the router's document carries them in clear.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique


class FirewallRule(Common, Base):
    __tablename__ = "firewall_rules"

    purpose: Mapped[str] = mapped_column(String(32), index=True)
    traffic_type: Mapped[str] = mapped_column(String(16), default="Ingress")
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), index=True)
    ip_address_id: Mapped[int | None] = mapped_column(ForeignKey("public_ips.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    protocol: Mapped[str] = mapped_column(String(16))
    start_port: Mapped[int | None] = mapped_column(Integer)
    end_port: Mapped[int | None] = mapped_column(Integer)
    icmp_type: Mapped[int | None] = mapped_column(Integer)
    icmp_code: Mapped[int | None] = mapped_column(Integer)
    source_cidrs: Mapped[str | None] = mapped_column(Text)  # comma-separated
    dest_cidrs: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="Add", index=True)
    #: The port forwarding or LB rule a firewall rule was opened for (openfirewall).
    related_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # Port forwarding: the instance and its private ports.
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vm_instances.id"), index=True)
    dest_ip: Mapped[str | None] = mapped_column(String(64))
    dest_start: Mapped[int | None] = mapped_column(Integer)
    dest_end: Mapped[int | None] = mapped_column(Integer)
    # Load balancing: name, algorithm and protocol (dest_start is the private port).
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(4096))
    algorithm: Mapped[str | None] = mapped_column(String(32))
    lb_protocol: Mapped[str | None] = mapped_column(String(16))


class LbMember(Common, Base):
    """An instance assigned to a load balancer rule (CloudStack's load_balancer_vm_map)."""

    __tablename__ = "lb_members"
    __table_args__ = (live_unique("uq_lb_members_live_rule_vm_ip", "rule_id", "vm_id", "ip"),)

    rule_id: Mapped[int] = mapped_column(ForeignKey("firewall_rules.id"), index=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_instances.id"), index=True)
    ip: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="Add")


class LbPolicy(Common, Base):
    """A stickiness or health-check policy of a load balancer rule (``kind``)."""

    __tablename__ = "lb_policies"

    rule_id: Mapped[int] = mapped_column(ForeignKey("firewall_rules.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # Stickiness, HealthCheck
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(4096))
    method: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    state: Mapped[str] = mapped_column(String(16), default="Add")


class RemoteAccessVpn(Common, Base):
    __tablename__ = "remote_access_vpns"
    __table_args__ = (live_unique("uq_remote_access_vpns_live_ip", "ip_address_id"),)

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), index=True)
    ip_address_id: Mapped[int] = mapped_column(ForeignKey("public_ips.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    ip_range: Mapped[str] = mapped_column(String(64))
    preshared_key: Mapped[str] = mapped_column(Text)  # sealed (mgmt.db.sealing)
    state: Mapped[str] = mapped_column(String(16), default="Added")


class VpnUser(Common, Base):
    __tablename__ = "vpn_users"
    __table_args__ = (live_unique("uq_vpn_users_live_account_name", "account_id", "username"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    username: Mapped[str] = mapped_column(String(255))
    password: Mapped[str] = mapped_column(Text)  # sealed (mgmt.db.sealing)
    state: Mapped[str] = mapped_column(String(16), default="Add")


class CustomerGateway(Common, Base):
    """The other end of a site-to-site VPN (createVpnCustomerGateway)."""

    __tablename__ = "vpn_customer_gateways"

    name: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    cidr_list: Mapped[str] = mapped_column(Text)
    ipsec_psk: Mapped[str] = mapped_column(Text)  # sealed (mgmt.db.sealing)
    ike_policy: Mapped[str] = mapped_column(String(255))
    esp_policy: Mapped[str] = mapped_column(String(255))
    ike_lifetime: Mapped[int] = mapped_column(Integer, default=86400)
    esp_lifetime: Mapped[int] = mapped_column(Integer, default=3600)
    dpd: Mapped[bool] = mapped_column(default=False)
    force_encap: Mapped[bool] = mapped_column(default=False)
    ike_version: Mapped[str] = mapped_column(String(8), default="ike")
    split_connections: Mapped[bool] = mapped_column(default=False)


class VpnGateway(Common, Base):
    """The network's end of site-to-site VPNs: its source-NAT public IP."""

    __tablename__ = "vpn_gateways"
    __table_args__ = (live_unique("uq_vpn_gateways_live_network", "network_id"),)

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"))
    ip_address_id: Mapped[int] = mapped_column(ForeignKey("public_ips.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)


class VpnConnection(Common, Base):
    __tablename__ = "vpn_connections"
    __table_args__ = (
        live_unique("uq_vpn_connections_live_pair", "vpn_gateway_id", "customer_gateway_id"),
    )

    vpn_gateway_id: Mapped[int] = mapped_column(ForeignKey("vpn_gateways.id"), index=True)
    customer_gateway_id: Mapped[int] = mapped_column(
        ForeignKey("vpn_customer_gateways.id"), index=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    passive: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="Pending")
