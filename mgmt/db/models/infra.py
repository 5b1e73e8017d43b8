"""Infrastructure tables: pods, clusters, hosts, physical networks, public IP ranges.
(Revision 0002.)

``public_ips`` holds one row per public address of a ``vlan_ip_ranges`` row, so
that allocating an address (associateIpAddress, a later issue) is one
conditional UPDATE of a Free row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique
from mgmt.db.types import UTCDateTime


class Pod(Common, Base):
    __tablename__ = "pods"
    __table_args__ = (live_unique("uq_pods_live_zone_name", "zone_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    start_ip: Mapped[str | None] = mapped_column(String(64))
    end_ip: Mapped[str | None] = mapped_column(String(64))
    allocation_state: Mapped[str] = mapped_column(String(16), default="Enabled")


class Cluster(Common, Base):
    __tablename__ = "clusters"
    __table_args__ = (live_unique("uq_clusters_live_pod_name", "pod_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    pod_id: Mapped[int] = mapped_column(ForeignKey("pods.id"), index=True)
    hypervisor: Mapped[str] = mapped_column(String(32))
    cluster_type: Mapped[str] = mapped_column(String(32), default="CloudManaged")
    allocation_state: Mapped[str] = mapped_column(String(16), default="Enabled")
    managed_state: Mapped[str] = mapped_column(String(16), default="Managed")


class Host(Common, Base):
    """A hypervisor host. ``password`` is kept for the host driver, never answered."""

    __tablename__ = "hosts"
    __table_args__ = (live_unique("uq_hosts_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="Routing")
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    pod_id: Mapped[int] = mapped_column(ForeignKey("pods.id"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id"), index=True)
    url: Mapped[str] = mapped_column(String(1024))
    username: Mapped[str | None] = mapped_column(String(255))
    password: Mapped[str | None] = mapped_column(String(255))
    hypervisor: Mapped[str] = mapped_column(String(32))
    ip_address: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="Up")
    resource_state: Mapped[str] = mapped_column(String(32), default="Enabled")
    host_tags: Mapped[str | None] = mapped_column(Text)
    cpu_number: Mapped[int | None] = mapped_column(Integer)
    cpu_speed: Mapped[int | None] = mapped_column(Integer)
    memory_total: Mapped[int | None] = mapped_column(BigInteger)
    #: The SSH host key seen at addHost ("<type> <base64>"); every later connection
    #: must present the same one. (Revision 0006.)
    host_key: Mapped[str | None] = mapped_column(Text)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PhysicalNetwork(Common, Base):
    __tablename__ = "physical_networks"
    __table_args__ = (live_unique("uq_physical_networks_live_zone_name", "zone_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)
    isolation_methods: Mapped[str | None] = mapped_column(String(255))
    vlan: Mapped[str | None] = mapped_column(String(1024))
    broadcast_domain_range: Mapped[str] = mapped_column(String(16), default="ZONE")
    network_speed: Mapped[str | None] = mapped_column(String(16))
    tags: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="Disabled")


class TrafficType(Common, Base):
    __tablename__ = "traffic_types"
    __table_args__ = (
        live_unique("uq_traffic_types_live_network_type", "physical_network_id", "traffic_type"),
    )

    physical_network_id: Mapped[int] = mapped_column(
        ForeignKey("physical_networks.id"), index=True
    )
    traffic_type: Mapped[str] = mapped_column(String(32))
    kvm_network_label: Mapped[str | None] = mapped_column(String(255))
    vlan: Mapped[str | None] = mapped_column(String(64))


class ServiceProvider(Common, Base):
    """A provider on a physical network; ``element_*`` is its VirtualRouterElement."""

    __tablename__ = "service_providers"
    __table_args__ = (
        live_unique("uq_service_providers_live_network_name", "physical_network_id",
                    "name"),
    )

    physical_network_id: Mapped[int] = mapped_column(
        ForeignKey("physical_networks.id"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="Disabled")
    services: Mapped[str] = mapped_column(Text, default="")
    element_uuid: Mapped[str | None] = mapped_column(String(36), unique=True)
    element_enabled: Mapped[bool] = mapped_column(Boolean, default=False)


class VlanIpRange(Common, Base):
    """A public IP range (createVlanIpRange); its addresses are rows of public_ips."""

    __tablename__ = "vlan_ip_ranges"

    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pods.id"), index=True)
    physical_network_id: Mapped[int | None] = mapped_column(
        ForeignKey("physical_networks.id"), index=True
    )
    vlan: Mapped[str] = mapped_column(String(64), default="untagged")
    gateway: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    start_ip: Mapped[str] = mapped_column(String(64))
    end_ip: Mapped[str] = mapped_column(String(64))
    for_virtual_network: Mapped[bool] = mapped_column(Boolean, default=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)


class PublicIp(Common, Base):
    """One public address. ``network_id`` has no foreign key until networks exist."""

    __tablename__ = "public_ips"
    __table_args__ = (
        live_unique("uq_public_ips_live_zone_address", "zone_id", "address"),
        Index("ix_public_ips_zone_id_state", "zone_id", "state"),
    )

    address: Mapped[str] = mapped_column(String(64))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"))
    vlan_range_id: Mapped[int] = mapped_column(ForeignKey("vlan_ip_ranges.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="Free")
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    network_id: Mapped[int | None] = mapped_column(Integer, index=True)
    allocated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Revision 0006: the network's source-NAT address, and static NAT to an instance.
    source_nat: Mapped[bool] = mapped_column(Boolean, default=False)
    static_nat_vm_id: Mapped[int | None] = mapped_column(Integer, index=True)
    static_nat_ip: Mapped[str | None] = mapped_column(String(64))
