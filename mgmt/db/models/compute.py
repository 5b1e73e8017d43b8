"""Instances, their NICs, virtual routers and the keystore. (Revisions 0006, 0007.)

``vm_instances`` holds user instances and system VMs alike (``type`` is
CloudStack's: ``User``, ``DomainRouter``, ``SecondaryStorageVm`` or
``ConsoleProxy``), as CloudStack's vm_instance does; what only a router has lives
in ``routers`` (one row per router VM), what only a system VM has in
``system_vms`` and an instance's VNC display in ``vm_consoles``
(mgmt.db.models.systemvms).

A router row carries the reconciliation state: ``generation``/``doc_hash`` of
the last document built for it, ``applied_generation``/``applied_hash`` of the
last one its agent confirmed, and the per-router lock (``lock_owner`` until
``lock_expires``) that serialises work on it across management servers. The
``heartbeat_*`` columns are what the agent's last accepted signed heartbeat said
(mgmt.orchestration.heartbeats); ``heartbeat_seq`` refuses replays.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique
from mgmt.db.types import UTCDateTime


class VmInstance(Common, Base):
    __tablename__ = "vm_instances"
    __table_args__ = (live_unique("uq_vm_instances_live_name", "name"),)

    #: CloudStack's internal name: i-<account>-<id>-VM, r-<id>-VM.
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    host_name: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="User", index=True)
    state: Mapped[str] = mapped_column(String(32), default="Stopped", index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    last_host_id: Mapped[int | None] = mapped_column(Integer)
    service_offering_id: Mapped[int | None] = mapped_column(
        ForeignKey("service_offerings.id"), index=True
    )
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"), index=True)
    cpu_number: Mapped[int] = mapped_column(Integer, default=1)
    cpu_speed: Mapped[int] = mapped_column(Integer, default=500)  # MHz
    memory: Mapped[int] = mapped_column(Integer, default=256)  # MiB
    ha_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    user_data: Mapped[str | None] = mapped_column(Text)
    group_name: Mapped[str | None] = mapped_column(String(255))
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Nic(Common, Base):
    """A NIC of an instance or router on a guest network, the public segment or the
    control network (``traffic_type`` Guest, Public or Control)."""

    __tablename__ = "nics"
    __table_args__ = (
        live_unique("uq_nics_live_network_ip", "network_id", "ip_address"),
        live_unique("uq_nics_live_mac", "mac"),
    )

    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_instances.id"), index=True)
    network_id: Mapped[int | None] = mapped_column(ForeignKey("networks.id"), index=True)
    traffic_type: Mapped[str] = mapped_column(String(16), default="Guest")
    ip_address: Mapped[str | None] = mapped_column(String(64))
    netmask: Mapped[str | None] = mapped_column(String(64))
    gateway: Mapped[str | None] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(17))
    device_id: Mapped[int] = mapped_column(Integer, default=0)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Router(Common, Base):
    __tablename__ = "routers"
    __table_args__ = (live_unique("uq_routers_live_vm", "vm_id"),)

    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_instances.id"))
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), index=True)
    is_redundant: Mapped[bool] = mapped_column(Boolean, default=False)
    redundant_state: Mapped[str] = mapped_column(String(16), default="UNKNOWN")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    control_ip: Mapped[str | None] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    doc_hash: Mapped[str | None] = mapped_column(String(64))
    applied_generation: Mapped[int] = mapped_column(Integer, default=0)
    applied_hash: Mapped[str | None] = mapped_column(String(64))
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(64))
    health: Mapped[str | None] = mapped_column(Text)  # JSON: the last health-check results
    last_error: Mapped[str | None] = mapped_column(Text)
    lock_owner: Mapped[str | None] = mapped_column(String(255))
    lock_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When this server's clock received the last accepted heartbeat, and what it said.
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_seq: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_interval: Mapped[float | None] = mapped_column(Float)
    heartbeat_generation: Mapped[int | None] = mapped_column(Integer)
    heartbeat_hash: Mapped[str | None] = mapped_column(String(64))
    heartbeat_converged: Mapped[bool | None] = mapped_column(Boolean)
    heartbeat_error: Mapped[str | None] = mapped_column(Text)


class KeystoreEntry(Common, Base):
    """A certificate and key the servers share (the appliance CA), as CloudStack's
    keystore table. Every management server of a database signs with the same CA."""

    __tablename__ = "keystore"
    __table_args__ = (live_unique("uq_keystore_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(64))
    certificate: Mapped[str] = mapped_column(Text)
    private_key: Mapped[str] = mapped_column(Text)
