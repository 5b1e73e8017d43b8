"""System VMs: each zone's secondary storage VM and console proxy; instances' VNC
displays, which the console proxy opens. (Revision 0009.)

The VM itself is a ``vm_instances`` row (type ``SecondaryStorageVm``, name
``s-<id>-VM``, or ``ConsoleProxy``, ``v-<id>-VM``), as in CloudStack; this table
holds what only a system VM has: its role, its control and public addresses and
the reconciliation state of its document, as ``routers`` does for a router.

One live row per zone and role (a unique index): of two management servers that
start a zone's console proxy at once, one insert wins and the other backs off.
``lock_owner`` until ``lock_expires`` is the lease that serialises work on one
system VM across servers (start, stop, push, recreate).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique
from mgmt.db.types import UTCDateTime

#: The agent role of each system VM type, and back.
ROLE_OF_TYPE = {"SecondaryStorageVm": "storage", "ConsoleProxy": "console"}
TYPE_OF_ROLE = {role: type_ for type_, role in ROLE_OF_TYPE.items()}


class SystemVm(Common, Base):
    __tablename__ = "system_vms"
    __table_args__ = (
        live_unique("uq_system_vms_live_zone_role", "zone_id", "role"),
        live_unique("uq_system_vms_live_vm", "vm_id"),
    )

    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_instances.id"))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    #: The agent's role: ``storage`` or ``console``.
    role: Mapped[str] = mapped_column(String(16))
    control_ip: Mapped[str | None] = mapped_column(String(64))
    #: The zone public address it serves on (owned by the system, no account).
    public_ip_id: Mapped[int | None] = mapped_column(ForeignKey("public_ips.id"))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    doc_hash: Mapped[str | None] = mapped_column(String(64))
    applied_generation: Mapped[int] = mapped_column(Integer, default=0)
    applied_hash: Mapped[str | None] = mapped_column(String(64))
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(64))
    health: Mapped[str | None] = mapped_column(Text)  # JSON: the last health-check results
    last_error: Mapped[str | None] = mapped_column(Text)
    #: The console proxy's open sessions at its last look (listSystemVms).
    active_sessions: Mapped[int] = mapped_column(Integer, default=0)
    lock_owner: Mapped[str | None] = mapped_column(String(255))
    lock_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VmConsole(Common, Base):
    """A running instance's VNC display on its host: the port on the host's control
    address, and the display's password, new at every start and sealed
    (mgmt.db.sealing, purpose VNC_PASSWORD). Removed when the instance stops. A table of
    its own rather than columns of ``vm_instances``, whose rows every part writes."""

    __tablename__ = "vm_consoles"
    __table_args__ = (
        live_unique("uq_vm_consoles_live_vm", "vm_id"),
        live_unique("uq_vm_consoles_live_host_port", "host_id", "port"),
    )

    vm_id: Mapped[int] = mapped_column(ForeignKey("vm_instances.id"))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    port: Mapped[int] = mapped_column(Integer)
    password: Mapped[str] = mapped_column(String(255))
