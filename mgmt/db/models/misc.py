"""Scoped setting values, resource tags and alerts. (Revision 0004.)

Projects and their members live in core (``projects``, ``project_accounts``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique
from mgmt.db.types import UTCDateTime, utcnow


class ConfigurationValue(Common, Base):
    """A setting's value at one zone, domain or account (updateConfiguration with zoneid,
    domainid or accountid); ``scope_id`` is that object's internal id."""

    __tablename__ = "configuration_values"
    __table_args__ = (
        live_unique("uq_configuration_values_live_scope", "name", "scope", "scope_id"),
    )

    name: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(Text)


class ResourceTag(Common, Base):
    """A key/value tag on an object; ``account_id``/``domain_id`` are the tagged object's
    owner (None for objects no account owns, such as zones)."""

    __tablename__ = "resource_tags"
    __table_args__ = (
        live_unique("uq_resource_tags_live_key", "resource_type", "resource_id", "key"),
        Index("ix_resource_tags_resource", "resource_type", "resource_id"),
    )

    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[int] = mapped_column(Integer)
    resource_uuid: Mapped[str] = mapped_column(String(36), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)


class Alert(Common, Base):
    """Something an operator should look at (listAlerts)."""

    __tablename__ = "alerts"

    type: Mapped[int] = mapped_column(Integer, index=True)
    subject: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id"), index=True)
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pods.id"), index=True)
    sent: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
