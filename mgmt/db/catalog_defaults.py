"""First-start catalogue: OS types, CloudStack's default offerings.

Idempotent like the rest of the bootstrap: a default whose name is in its
table already is left alone, so an operator's edits survive restarts, and an
offering the operator deleted (a removed row) is not brought back.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models.catalog import (
    DiskOffering,
    NetworkOffering,
    NetworkOfferingService,
    OsCategory,
    OsType,
    ServiceOffering,
    VpcOffering,
    VpcOfferingService,
)

OS_TYPES = {
    "Debian": ("Debian GNU/Linux 11 (64-bit)", "Debian GNU/Linux 12 (64-bit)"),
    "Ubuntu": ("Ubuntu 20.04 LTS", "Ubuntu 22.04 LTS", "Ubuntu 24.04 LTS"),
    "CentOS": ("Rocky Linux 9", "AlmaLinux 9"),
    "Other": ("Other Linux (64-bit)", "Other (64-bit)"),
}

VR = "VirtualRouter"
VPC_VR = "VpcVirtualRouter"
ISOLATED_SERVICES = (
    "Dhcp", "Dns", "SourceNat", "StaticNat", "PortForwarding", "Firewall", "Lb", "Vpn",
    "UserData",
)
VPC_TIER_SERVICES = (
    "Dhcp", "Dns", "SourceNat", "StaticNat", "PortForwarding", "Lb", "UserData",
    "NetworkACL", "Vpn",
)
VPC_SERVICES = (
    "Dhcp", "Dns", "SourceNat", "StaticNat", "PortForwarding", "Lb", "UserData",
    "NetworkACL", "Vpn", "Gateway",
)


def capabilities(service: str, redundant: bool = False) -> dict[str, str]:
    """The capabilities CloudStack shows for a virtual-router service."""
    if service == "SourceNat":
        return {"SupportedSourceNatTypes": "peraccount",
                "RedundantRouter": "true" if redundant else "false"}
    if service == "Lb":
        return {"SupportedLBIsolation": "dedicated", "ElasticLb": "false",
                "InlineMode": "false"}
    if service == "StaticNat":
        return {"ElasticIp": "false", "AssociatePublicIP": "false"}
    return {}


NETWORK_OFFERINGS = (
    # name, display text, services, provider, for_vpc, conserve_mode, redundant
    ("DefaultIsolatedNetworkOfferingWithSourceNatService",
     "Offering for Isolated networks with Source Nat service enabled",
     ISOLATED_SERVICES, VR, False, True, False),
    ("DefaultIsolatedNetworkOfferingWithSourceNatServiceRedundant",
     "Offering for Isolated networks with Source Nat service and redundant virtual routers",
     ISOLATED_SERVICES, VR, False, True, True),
    ("DefaultIsolatedNetworkOfferingForVpcNetworks",
     "Offering for Isolated VPC networks with Source Nat service enabled",
     VPC_TIER_SERVICES, VPC_VR, True, False, False),
)
VPC_OFFERINGS = (
    ("Default VPC offering", "Default VPC offering", False),
    ("Redundant VPC offering", "Redundant VPC offering", True),
)
SERVICE_OFFERINGS = (
    # name, display text, cpus, MHz, MiB
    ("Small Instance", "Small Instance", 1, 500, 512),
    ("Medium Instance", "Medium Instance", 1, 1000, 1024),
)
DISK_OFFERINGS = (
    # name, display text, GB, customized
    ("Small", "Small Disk, 5 GB", 5, False),
    ("Medium", "Medium Disk, 20 GB", 20, False),
    ("Large", "Large Disk, 100 GB", 100, False),
    ("Custom", "Custom Disk", 0, True),
)


async def _names(session: AsyncSession, model) -> set[str]:
    """Names of the table's rows, removed ones included."""
    return set((await session.scalars(select(model.name))).all())


async def ensure_catalog_defaults(session: AsyncSession) -> None:
    """Insert what is missing of the default catalogue (inside the bootstrap transaction)."""
    categories = {c.name: c for c in (await session.scalars(
        select(OsCategory).where(OsCategory.live()))).all()}
    types = set((await session.scalars(select(OsType.description).where(OsType.live()))).all())
    for category_name, descriptions in OS_TYPES.items():
        category = categories.get(category_name)
        if category is None:
            category = OsCategory(name=category_name)
            session.add(category)
            await session.flush()
        for description in descriptions:
            if description not in types:
                session.add(OsType(description=description, category_id=category.id))

    existing = await _names(session, NetworkOffering)
    for sort_key, (name, text, services, provider, for_vpc, conserve, redundant) in enumerate(
        NETWORK_OFFERINGS
    ):
        if name in existing:
            continue
        offering = NetworkOffering(
            name=name, display_text=text, guest_ip_type="Isolated", traffic_type="Guest",
            state="Enabled", is_default=True, is_persistent=False, specify_vlan=False,
            egress_default_policy=False, conserve_mode=conserve, for_vpc=for_vpc,
            availability="Optional", sort_key=sort_key,
        )
        session.add(offering)
        await session.flush()
        for service in services:
            session.add(NetworkOfferingService(
                offering_id=offering.id, service=service, provider=provider,
                capabilities=json.dumps(capabilities(service, redundant)),
            ))

    existing = await _names(session, VpcOffering)
    for sort_key, (name, text, redundant) in enumerate(VPC_OFFERINGS):
        if name in existing:
            continue
        vpc = VpcOffering(name=name, display_text=text, state="Enabled", is_default=True,
                          sort_key=sort_key)
        session.add(vpc)
        await session.flush()
        for service in VPC_SERVICES:
            session.add(VpcOfferingService(
                offering_id=vpc.id, service=service, provider=VPC_VR,
                capabilities=json.dumps(capabilities(service, redundant)),
            ))

    existing = await _names(session, ServiceOffering)
    for name, text, cpus, speed, memory in SERVICE_OFFERINGS:
        if name not in existing:
            session.add(ServiceOffering(name=name, display_text=text, cpu_number=cpus,
                                        cpu_speed=speed, memory=memory, is_default=True))
    existing = await _names(session, DiskOffering)
    for name, text, size, customized in DISK_OFFERINGS:
        if name not in existing:
            session.add(DiskOffering(name=name, display_text=text, disk_size_gb=size,
                                     customized=customized, is_default=True))
    await session.flush()
