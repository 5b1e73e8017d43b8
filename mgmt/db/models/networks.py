"""Guest networks, as records (orchestration comes with the routers). (Revision 0005.)

A network belongs to an account (and its domain) in a zone and follows a network
offering. It stays ``Allocated`` (CloudStack's state before the first instance):
the virtual routers that implement networks arrive in a later issue, and with
them the ``Implemented`` state.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common


class Network(Common, Base):
    __tablename__ = "networks"

    name: Mapped[str] = mapped_column(String(255), index=True)
    display_text: Mapped[str] = mapped_column(String(4096))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    network_offering_id: Mapped[int] = mapped_column(
        ForeignKey("network_offerings.id"), index=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    start_ip: Mapped[str | None] = mapped_column(String(64))
    end_ip: Mapped[str | None] = mapped_column(String(64))
    network_domain: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32), default="Allocated")
    vlan: Mapped[str | None] = mapped_column(String(255))
    dns1: Mapped[str | None] = mapped_column(String(64))
    dns2: Mapped[str | None] = mapped_column(String(64))
