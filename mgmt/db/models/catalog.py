"""Catalogue tables: service, disk, network and VPC offerings, templates, ISOs, OS types.
(Revision 0003.)

Offerings without a ``domain_id`` are public; one with a domain is offered to
that domain and the domains under it. Network and VPC offerings keep their
services as one row per (service, provider), with the service's capabilities
as JSON text (``{"RedundantRouter": "true"}``). Templates and ISOs share one
table (ISOs have format ``ISO``), owned by an account; ``template_zones`` says
in which zones a template is registered and how its download there stands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mgmt.db.models.core import Base, Common, live_unique
from mgmt.db.types import UTCDateTime


class OsCategory(Common, Base):
    __tablename__ = "os_categories"
    __table_args__ = (live_unique("uq_os_categories_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))


class OsType(Common, Base):
    __tablename__ = "os_types"
    __table_args__ = (live_unique("uq_os_types_live_description", "description"),)

    description: Mapped[str] = mapped_column(String(255))
    category_id: Mapped[int] = mapped_column(ForeignKey("os_categories.id"), index=True)
    is_user_defined: Mapped[bool] = mapped_column(Boolean, default=False)


class ServiceOffering(Common, Base):
    __tablename__ = "service_offerings"

    name: Mapped[str] = mapped_column(String(255), index=True)
    display_text: Mapped[str] = mapped_column(String(4096))
    cpu_number: Mapped[int | None] = mapped_column(Integer)
    cpu_speed: Mapped[int | None] = mapped_column(Integer)  # MHz
    memory: Mapped[int | None] = mapped_column(Integer)  # MiB
    offer_ha: Mapped[bool] = mapped_column(Boolean, default=False)
    limit_cpu_use: Mapped[bool] = mapped_column(Boolean, default=False)
    is_volatile: Mapped[bool] = mapped_column(Boolean, default=False)
    storage_type: Mapped[str] = mapped_column(String(16), default="shared")
    storage_tags: Mapped[str | None] = mapped_column(String(4096))
    host_tags: Mapped[str | None] = mapped_column(String(4096))
    is_system: Mapped[bool] = mapped_column(Boolean, default=False)
    system_vm_type: Mapped[str | None] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_key: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="Active")
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)


class DiskOffering(Common, Base):
    __tablename__ = "disk_offerings"

    name: Mapped[str] = mapped_column(String(255), index=True)
    display_text: Mapped[str] = mapped_column(String(4096))
    disk_size_gb: Mapped[int] = mapped_column(Integer, default=0)
    customized: Mapped[bool] = mapped_column(Boolean, default=False)
    storage_type: Mapped[str] = mapped_column(String(16), default="shared")
    tags: Mapped[str | None] = mapped_column(String(4096))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_key: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="Active")
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)


class NetworkOffering(Common, Base):
    __tablename__ = "network_offerings"
    __table_args__ = (live_unique("uq_network_offerings_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str] = mapped_column(String(4096))
    guest_ip_type: Mapped[str] = mapped_column(String(16), default="Isolated")
    traffic_type: Mapped[str] = mapped_column(String(16), default="Guest")
    state: Mapped[str] = mapped_column(String(16), default="Disabled")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    is_persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    specify_vlan: Mapped[bool] = mapped_column(Boolean, default=False)
    specify_ip_ranges: Mapped[bool] = mapped_column(Boolean, default=False)
    egress_default_policy: Mapped[bool] = mapped_column(Boolean, default=False)
    conserve_mode: Mapped[bool] = mapped_column(Boolean, default=True)
    for_vpc: Mapped[bool] = mapped_column(Boolean, default=False)
    availability: Mapped[str] = mapped_column(String(16), default="Optional")
    network_rate: Mapped[int | None] = mapped_column(Integer)
    tags: Mapped[str | None] = mapped_column(String(4096))
    sort_key: Mapped[int] = mapped_column(Integer, default=0)


class NetworkOfferingService(Common, Base):
    __tablename__ = "network_offering_services"

    offering_id: Mapped[int] = mapped_column(ForeignKey("network_offerings.id"), index=True)
    service: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    capabilities: Mapped[str] = mapped_column(Text, default="{}")


def offers_redundant_router(services: Iterable[NetworkOfferingService]) -> bool:
    """Whether an offering with these services runs a redundant router pair."""
    return any(json.loads(s.capabilities or "{}").get("RedundantRouter") == "true"
               for s in services)


class VpcOffering(Common, Base):
    __tablename__ = "vpc_offerings"
    __table_args__ = (live_unique("uq_vpc_offerings_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str] = mapped_column(String(4096))
    state: Mapped[str] = mapped_column(String(16), default="Disabled")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_key: Mapped[int] = mapped_column(Integer, default=0)


class VpcOfferingService(Common, Base):
    __tablename__ = "vpc_offering_services"

    offering_id: Mapped[int] = mapped_column(ForeignKey("vpc_offerings.id"), index=True)
    service: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    capabilities: Mapped[str] = mapped_column(Text, default="{}")


class Template(Common, Base):
    """A template or (format ``ISO``) an ISO image, owned by an account."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(255), index=True)
    display_text: Mapped[str] = mapped_column(String(4096))
    url: Mapped[str | None] = mapped_column(String(2048))
    format: Mapped[str] = mapped_column(String(16))
    hypervisor: Mapped[str | None] = mapped_column(String(32))
    os_type_id: Mapped[int] = mapped_column(ForeignKey("os_types.id"), index=True)
    checksum: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_featured: Mapped[bool] = mapped_column(Boolean, default=False)
    is_extractable: Mapped[bool] = mapped_column(Boolean, default=False)
    password_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    requires_hvm: Mapped[bool] = mapped_column(Boolean, default=True)
    bootable: Mapped[bool] = mapped_column(Boolean, default=True)
    cross_zones: Mapped[bool] = mapped_column(Boolean, default=False)
    template_type: Mapped[str] = mapped_column(String(16), default="USER")
    sort_key: Mapped[int] = mapped_column(Integer, default=0)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)


class TemplateZone(Common, Base):
    """A template in one zone: its image on the zone's secondary storage appliance.

    Its ``uuid`` is the image's id in the storage document, so a template copied
    back into a zone it was deleted from is a new image. The poller
    (mgmt.orchestration.image_status) fills the status columns from the appliance's
    report; ``is_ready`` only when the appliance holds the verified image. A row
    being deleted stays (``deleting``, hidden from listings) until the appliance
    confirms, so the document can keep naming the image ``absent`` until then.
    (Revision 0003; the storage columns revision 0010.)
    """

    __tablename__ = "template_zones"
    __table_args__ = (
        live_unique("uq_template_zones_live_template_zone", "template_id", "zone_id"),
    )

    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id"), index=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zones.id"), index=True)
    status: Mapped[str] = mapped_column(String(255), default="Download pending")
    is_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int | None] = mapped_column(BigInteger)  # virtual size, bytes
    physical_size: Mapped[int | None] = mapped_column(BigInteger)  # the file's size
    #: CloudStack's download state names: NOT_DOWNLOADED, DOWNLOAD_IN_PROGRESS,
    #: DOWNLOADED, DOWNLOAD_ERROR, NOT_UPLOADED, UPLOAD_IN_PROGRESS, UPLOAD_ERROR,
    #: ABANDONED.
    download_state: Mapped[str] = mapped_column(String(32), default="NOT_DOWNLOADED")
    download_percent: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    #: How the bytes arrive: "download" (the template's URL), "upload" (a browser
    #: POST) or "copy" (another zone's extract URL, in ``url``).
    source: Mapped[str] = mapped_column(String(16), default="download")
    url: Mapped[str | None] = mapped_column(String(4096))  # this zone's URL, else the template's
    checksum: Mapped[str | None] = mapped_column(String(255))  # declared here, else the template's
    stored_checksum: Mapped[str | None] = mapped_column(String(255))  # what the appliance verified
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    upload_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
