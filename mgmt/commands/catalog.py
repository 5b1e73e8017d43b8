"""The catalogue: service, disk, network and VPC offerings, templates, ISOs, OS types.

Offerings are created by the root admin; an offering with a domain is shown to
that domain and the domains under it. Templates and ISOs belong to an account:
``templatefilter`` / ``isofilter`` decide which of the visible ones a listing
shows, and another account's private template answers exactly like a missing
id. Each zone's secondary storage appliance fetches (or receives) the image:
a template is ``Download pending`` and not ready until the appliance holds it
verified (mgmt.orchestration.image_status); uploads, extract and copies are in
mgmt.commands.images.
"""

from __future__ import annotations

import json

from sqlalchemy import and_, false, func, or_, select, true

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import ALL_ROLES, PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import apply_given, date, new_id, not_found, paged
from mgmt.commands.image_urls import check_checksum, check_url, internal_sites
from mgmt.commands.projects import visible_project
from mgmt.commands.tags import tags_for
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.catalog import (
    DiskOffering,
    NetworkOffering,
    NetworkOfferingService,
    OsCategory,
    OsType,
    ServiceOffering,
    Template,
    TemplateZone,
    VpcOffering,
    VpcOfferingService,
)
from mgmt.db.models.networks import Network
from mgmt.db.settings import get_setting
from mgmt.db.tenancy import in_subtree, owned_by
from mgmt.orchestration import image_status

# ---------------------------------------------------------------- shared helpers


def _keyword(query, args, *columns):
    if args.get("keyword"):
        query = query.where(or_(*(c.contains(args["keyword"], autoescape=True) for c in columns)))
    return query


async def _domains_by_id(session, ids) -> dict[int, Domain]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = await session.scalars(select(Domain).where(Domain.id.in_(ids)))
    return {d.id: d for d in rows.all()}


async def _domain_param(session, uuid: str | None) -> Domain | None:
    if uuid is None:
        return None
    domain = await session.scalar(select(Domain).where(Domain.uuid == uuid, Domain.live()))
    if domain is None:
        raise not_found("domain", uuid)
    return domain


def _offered_to(model, caller):
    """Public offerings, and those of the caller's domain or a domain above it.

    Domain admins also see the offerings of the domains under theirs.
    """
    if caller.is_root_admin:
        return true()
    parts = caller.domain_path.split("/")
    above = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    visible = Domain.path.in_(above)
    if caller.is_domain_admin:
        visible = or_(visible, in_subtree(caller.domain_path))
    return or_(model.domain_id.is_(None), model.domain_id.in_(select(Domain.id).where(visible)))


async def _offering(session, model, uuid: str, what: str):
    row = await session.scalar(select(model).where(model.uuid == uuid, model.live()))
    if row is None:
        raise not_found(what, uuid)
    return row


def _domain_fields(domain: Domain | None) -> dict:
    return {"domainid": domain.uuid if domain else None, "domain": domain.name if domain else None}


# ---------------------------------------------------------------- service offerings

STORAGE_TYPES = ("shared", "local")


def service_offering_fields(o: ServiceOffering, domain: Domain | None) -> dict:
    return {
        "id": o.uuid,
        "name": o.name,
        "displaytext": o.display_text,
        "cpunumber": o.cpu_number,
        "cpuspeed": o.cpu_speed,
        "memory": o.memory,
        "created": date(o.created),
        "storagetype": o.storage_type,
        "offerha": o.offer_ha,
        "limitcpuuse": o.limit_cpu_use,
        "isvolatile": o.is_volatile,
        "storagetags": o.storage_tags,
        "hosttags": o.host_tags,
        "issystem": o.is_system,
        "systemvmtype": o.system_vm_type,
        "defaultuse": False,
        "iscustomized": o.cpu_number is None or o.memory is None,
        "provisioningtype": "thin",
        "cacheMode": "none",
        "dynamicscalingenabled": True,
        "diskofferingstrictness": False,
        "state": o.state,
        "hasannotations": False,
        **_domain_fields(domain),
    }


@command(
    "createServiceOffering",
    description="Creates a service offering (compute size for instances)",
    params=[
        Param("name", required=True, description="offering name"),
        Param("displaytext", length=4096, description="description (default: the name)"),
        Param("cpunumber", "integer", description="number of vCPUs (omit for a custom offering)"),
        Param("cpuspeed", "integer", description="CPU speed in MHz"),
        Param("memory", "integer", description="memory in MiB (omit for a custom offering)"),
        Param("offerha", "boolean", description="restart instances after a host failure"),
        Param("limitcpuuse", "boolean", description="cap CPU use at cpuspeed"),
        Param("isvolatile", "boolean", description="reset the root disk at every reboot"),
        Param("storagetype", choices=STORAGE_TYPES, description="shared (default) or local"),
        Param("tags", length=4096, description="storage tags, comma-separated"),
        Param("hosttags", length=4096, description="host tags, comma-separated"),
        Param("domainid", "uuid", description="offer only to this domain and its subdomains"),
        Param("issystem", "boolean", description="a system VM offering (not supported: false)"),
    ],
    response="serviceoffering",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def create_service_offering(call, args) -> ObjectResult:
    if args["issystem"]:
        raise param_error("issystem=true is not supported: system VM offerings are built in")
    for name in ("cpunumber", "cpuspeed", "memory"):
        if args[name] is not None and args[name] <= 0:
            raise param_error(f"{name} must be a positive number, not {args[name]}")
    if args["memory"] is not None and args["memory"] < 32:
        raise param_error(f"memory is in MiB and must be at least 32, not {args['memory']}")
    async with call.server.db.sessions() as session:
        domain = await _domain_param(session, args["domainid"])
        offering = ServiceOffering(
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            cpu_number=args["cpunumber"],
            cpu_speed=args["cpuspeed"],
            memory=args["memory"],
            offer_ha=bool(args["offerha"]),
            limit_cpu_use=bool(args["limitcpuuse"]),
            is_volatile=bool(args["isvolatile"]),
            storage_type=args["storagetype"] or "shared",
            storage_tags=args["tags"],
            host_tags=args["hosttags"],
            domain_id=domain.id if domain else None,
        )
        session.add(offering)
        await session.commit()
        await call.server.events.record(
            call, "SERVICE.OFFERING.CREATE", f"created service offering {offering.name}", offering
        )
        return ObjectResult("serviceoffering", service_offering_fields(offering, domain))


@command(
    "listServiceOfferings",
    description="Lists service offerings: public ones and those of the caller's domains",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("domainid", "uuid", description="only offerings of this domain"),
        Param("issystem", "boolean", description="system VM offerings (default false)"),
        Param("systemvmtype", choices=("domainrouter", "consoleproxy", "secondarystoragevm")),
        Param("virtualmachineid", "uuid", description="accepted for compatibility"),
        Param("isrecursive", "boolean"),
        Param("listall", "boolean"),
    ],
    list_key="serviceoffering",
    since="1.0.0",
)
async def list_service_offerings(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(ServiceOffering).where(
            ServiceOffering.live(),
            ServiceOffering.is_system.is_(bool(args["issystem"])),
            _offered_to(ServiceOffering, call.caller),
        )
        if args["id"]:
            query = query.where(ServiceOffering.uuid == args["id"])
        if args["name"]:
            query = query.where(ServiceOffering.name == args["name"])
        if args["systemvmtype"]:
            query = query.where(ServiceOffering.system_vm_type == args["systemvmtype"])
        if args["domainid"]:
            domain = await _domain_param(session, args["domainid"])
            query = query.where(ServiceOffering.domain_id == domain.id)
        query = _keyword(query, args, ServiceOffering.name, ServiceOffering.display_text)
        rows, total = await paged(
            session, query.order_by(ServiceOffering.sort_key, ServiceOffering.id), args
        )
        domains = await _domains_by_id(session, (o.domain_id for o in rows))
        return ListResult(
            "serviceoffering",
            [service_offering_fields(o, domains.get(o.domain_id)) for o in rows],
            total,
        )


@command(
    "updateServiceOffering",
    description="Updates a service offering's name, description or sort key",
    params=[
        Param("id", "uuid", required=True),
        Param("name"),
        Param("displaytext", length=4096),
        Param("sortkey", "integer"),
        Param("hosttags", length=4096),
        Param("storagetags", length=4096),
    ],
    response="serviceoffering",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def update_service_offering(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, ServiceOffering, args["id"], "service offering")
        apply_given(
            offering,
            args,
            (
                ("name", "name"),
                ("displaytext", "display_text"),
                ("sortkey", "sort_key"),
                ("hosttags", "host_tags"),
                ("storagetags", "storage_tags"),
            ),
        )
        await session.commit()
        domain = await session.get(Domain, offering.domain_id) if offering.domain_id else None
        await call.server.events.record(
            call, "SERVICE.OFFERING.EDIT", f"updated service offering {offering.name}", offering
        )
        return ObjectResult("serviceoffering", service_offering_fields(offering, domain))


@command(
    "deleteServiceOffering",
    description="Deletes a service offering",
    params=[Param("id", "uuid", required=True)],
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def delete_service_offering(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, ServiceOffering, args["id"], "service offering")
        offering.remove()
        await session.commit()
        await call.server.events.record(
            call, "SERVICE.OFFERING.DELETE", f"deleted service offering {offering.name}", offering
        )
    return PlainResult({"success": True})


# ---------------------------------------------------------------- disk offerings


def disk_offering_fields(o: DiskOffering, domain: Domain | None) -> dict:
    return {
        "id": o.uuid,
        "name": o.name,
        "displaytext": o.display_text,
        "disksize": o.disk_size_gb,
        "iscustomized": o.customized,
        "storagetype": o.storage_type,
        "tags": o.tags,
        "created": date(o.created),
        "displayoffering": True,
        "provisioningtype": "thin",
        "cacheMode": "none",
        "encrypt": False,
        "disksizestrictness": False,
        "state": o.state,
        "hasannotations": False,
        **_domain_fields(domain),
    }


@command(
    "createDiskOffering",
    description="Creates a disk offering (size and storage of data volumes)",
    params=[
        Param("name", required=True),
        Param("displaytext", length=4096, description="description (default: the name)"),
        Param("disksize", "long", description="size in GB (required unless customized)"),
        Param("customized", "boolean", description="the user chooses the size"),
        Param("storagetype", choices=STORAGE_TYPES),
        Param("tags", length=4096, description="storage tags, comma-separated"),
        Param("domainid", "uuid", description="offer only to this domain and its subdomains"),
    ],
    response="diskoffering",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def create_disk_offering(call, args) -> ObjectResult:
    size, customized = args["disksize"], bool(args["customized"])
    if customized and size:
        raise param_error("disksize must not be given for a customized disk offering")
    if not customized and size is None:
        raise param_error("disksize is required unless customized=true")
    if not customized and size <= 0:
        raise param_error(f"disksize must be a positive number of GB, not {size}")
    if size is not None and size > 1_000_000:
        raise param_error(f"disksize {size} GB is too large (at most 1000000)")
    async with call.server.db.sessions() as session:
        domain = await _domain_param(session, args["domainid"])
        offering = DiskOffering(
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            disk_size_gb=size or 0,
            customized=customized,
            storage_type=args["storagetype"] or "shared",
            tags=args["tags"],
            domain_id=domain.id if domain else None,
        )
        session.add(offering)
        await session.commit()
        await call.server.events.record(
            call, "DISK.OFFERING.CREATE", f"created disk offering {offering.name}", offering
        )
        return ObjectResult("diskoffering", disk_offering_fields(offering, domain))


@command(
    "listDiskOfferings",
    description="Lists disk offerings: public ones and those of the caller's domains",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("domainid", "uuid"),
        Param("zoneid", "uuid", description="accepted for compatibility"),
        Param("isrecursive", "boolean"),
        Param("listall", "boolean"),
    ],
    list_key="diskoffering",
    since="1.0.0",
)
async def list_disk_offerings(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(DiskOffering).where(
            DiskOffering.live(), _offered_to(DiskOffering, call.caller)
        )
        if args["id"]:
            query = query.where(DiskOffering.uuid == args["id"])
        if args["name"]:
            query = query.where(DiskOffering.name == args["name"])
        if args["domainid"]:
            domain = await _domain_param(session, args["domainid"])
            query = query.where(DiskOffering.domain_id == domain.id)
        query = _keyword(query, args, DiskOffering.name, DiskOffering.display_text)
        rows, total = await paged(
            session, query.order_by(DiskOffering.sort_key, DiskOffering.id), args
        )
        domains = await _domains_by_id(session, (o.domain_id for o in rows))
        return ListResult(
            "diskoffering",
            [disk_offering_fields(o, domains.get(o.domain_id)) for o in rows],
            total,
        )


@command(
    "updateDiskOffering",
    description="Updates a disk offering's name, description or sort key",
    params=[
        Param("id", "uuid", required=True),
        Param("name"),
        Param("displaytext", length=4096),
        Param("sortkey", "integer"),
        Param("tags", length=4096),
    ],
    response="diskoffering",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def update_disk_offering(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, DiskOffering, args["id"], "disk offering")
        apply_given(
            offering,
            args,
            (
                ("name", "name"),
                ("displaytext", "display_text"),
                ("sortkey", "sort_key"),
                ("tags", "tags"),
            ),
        )
        await session.commit()
        domain = await session.get(Domain, offering.domain_id) if offering.domain_id else None
        await call.server.events.record(
            call, "DISK.OFFERING.EDIT", f"updated disk offering {offering.name}", offering
        )
        return ObjectResult("diskoffering", disk_offering_fields(offering, domain))


@command(
    "deleteDiskOffering",
    description="Deletes a disk offering",
    params=[Param("id", "uuid", required=True)],
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def delete_disk_offering(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, DiskOffering, args["id"], "disk offering")
        offering.remove()
        await session.commit()
        await call.server.events.record(
            call, "DISK.OFFERING.DELETE", f"deleted disk offering {offering.name}", offering
        )
    return PlainResult({"success": True})


# ---------------------------------------------------------------- network and VPC offerings

SERVICES = (
    "Dhcp",
    "Dns",
    "SourceNat",
    "StaticNat",
    "PortForwarding",
    "Firewall",
    "Lb",
    "Vpn",
    "UserData",
    "NetworkACL",
    "Gateway",
)
PROVIDERS = ("VirtualRouter", "VpcVirtualRouter", "InternalLbVm", "ConfigDrive")
CAPABILITIES = {
    "SourceNat": {
        "SupportedSourceNatTypes": ("peraccount", "perzone"),
        "RedundantRouter": ("true", "false"),
    },
    "Lb": {
        "SupportedLBIsolation": ("dedicated", "shared"),
        "ElasticLb": ("true", "false"),
        "InlineMode": ("true", "false"),
        "lbSchemes": ("Public", "Internal"),
    },
    "StaticNat": {"ElasticIp": ("true", "false"), "AssociatePublicIP": ("true", "false")},
}


def _canonical(value: str, known: tuple[str, ...], param: str) -> str:
    match = {k.lower(): k for k in known}.get(value.strip().lower())
    if match is None:
        raise param_error(
            f"invalid value for {param}: {value[:60]!r} is not one of {', '.join(known)}"
        )
    return match


def _services_from(args, default_provider: str, *, vpc: bool) -> list[tuple[str, str, dict]]:
    """(service, provider, capabilities) from supportedservices, serviceproviderlist and
    servicecapabilitylist, checked against each other."""
    services = [
        _canonical(s, SERVICES, "supportedservices") for s in args["supportedservices"] or []
    ]
    if not vpc and "NetworkACL" in services:
        raise param_error("supportedservices: NetworkACL is only for VPC offerings (forvpc=true)")
    providers: dict[str, str] = {}
    for i, entry in enumerate(args["serviceproviderlist"] or []):
        if "service" not in entry or "provider" not in entry:
            raise param_error(f"serviceproviderlist[{i}] needs both .service and .provider")
        service = _canonical(entry["service"], SERVICES, f"serviceproviderlist[{i}].service")
        provider = _canonical(entry["provider"], PROVIDERS, f"serviceproviderlist[{i}].provider")
        if args["supportedservices"] is None:
            services.append(service)
        elif service not in services:
            raise param_error(
                f"serviceproviderlist[{i}]: service {service} is not in supportedservices"
            )
        providers[service] = provider
    caps: dict[str, dict[str, str]] = {}
    for i, entry in enumerate(args["servicecapabilitylist"] or []):
        where = f"servicecapabilitylist[{i}]"
        if not {"service", "capabilitytype", "capabilityvalue"} <= set(entry):
            raise param_error(f"{where} needs .service, .capabilitytype and .capabilityvalue")
        service = _canonical(entry["service"], SERVICES, f"{where}.service")
        if service not in services:
            raise param_error(f"{where}: service {service} is not in supportedservices")
        known = CAPABILITIES.get(service, {})
        if not known:
            raise param_error(f"{where}: service {service} has no capabilities to set")
        name = _canonical(entry["capabilitytype"], tuple(known), f"{where}.capabilitytype")
        caps.setdefault(service, {})[name] = _canonical(
            entry["capabilityvalue"], known[name], f"{where}.capabilityvalue"
        )
    return [
        (s, providers.get(s, default_provider), caps.get(s, {})) for s in dict.fromkeys(services)
    ]


def _service_fields(rows) -> list[dict]:
    by_service: dict[str, dict] = {}
    for row in rows:
        entry = by_service.setdefault(
            row.service, {"name": row.service, "provider": [], "capability": []}
        )
        if row.provider and {"name": row.provider} not in entry["provider"]:
            entry["provider"].append({"name": row.provider})
        for name, value in json.loads(row.capabilities or "{}").items():
            cap = {"name": name, "value": value, "canchooseservicecapability": False}
            if cap not in entry["capability"]:
                entry["capability"].append(cap)
    return list(by_service.values())


def network_offering_fields(o: NetworkOffering, services) -> dict:
    return {
        "id": o.uuid,
        "name": o.name,
        "displaytext": o.display_text,
        "tags": o.tags,
        "traffictype": o.traffic_type,
        "isdefault": o.is_default,
        "specifyvlan": o.specify_vlan,
        "conservemode": o.conserve_mode,
        "specifyipranges": o.specify_ip_ranges,
        "availability": o.availability,
        "networkrate": o.network_rate,
        "state": o.state,
        "guestiptype": o.guest_ip_type,
        "forvpc": o.for_vpc,
        "ispersistent": o.is_persistent,
        "egressdefaultpolicy": o.egress_default_policy,
        "supportsstrechedl2subnet": False,
        "supportspublicaccess": False,
        "supportsinternallb": False,
        "internetprotocol": "ipv4",
        "fortungsten": False,
        "fornsx": False,
        "created": date(o.created),
        "service": _service_fields(services),
        "hasannotations": False,
    }


async def _services_of(session, model, ids) -> dict[int, list]:
    out: dict[int, list] = {i: [] for i in ids}
    if ids:
        rows = await session.scalars(
            select(model).where(model.offering_id.in_(ids), model.live()).order_by(model.id)
        )
        for row in rows.all():
            out[row.offering_id].append(row)
    return out


async def _unique_name(session, model, name: str, what: str) -> None:
    if await session.scalar(select(model.id).where(model.name == name, model.live())):
        raise param_error(f"a {what} named {name} exists already")


SERVICE_MAP_PARAMS = (
    Param("supportedservices", "list", description="services, e.g. Dhcp,Dns,SourceNat"),
    Param(
        "serviceproviderlist",
        "map",
        description="serviceproviderlist[0].service=Dhcp&serviceproviderlist[0].provider=...",
    ),
    Param(
        "servicecapabilitylist",
        "map",
        description="servicecapabilitylist[0].service=SourceNat&..capabilitytype=..&"
        "..capabilityvalue=..",
    ),
)


@command(
    "createNetworkOffering",
    description="Creates a network offering (it starts Disabled unless enable=true)",
    params=[
        Param("name", required=True),
        Param("displaytext", length=4096, description="description (default: the name)"),
        Param("guestiptype", required=True, choices=("Isolated", "Shared", "L2")),
        Param("traffictype", required=True, choices=("GUEST",), description="GUEST"),
        *SERVICE_MAP_PARAMS,
        Param(
            "egressdefaultpolicy",
            "boolean",
            description="true (default): guests may send anywhere unless denied",
        ),
        Param("conservemode", "boolean", description="default true"),
        Param("specifyvlan", "boolean"),
        Param("specifyipranges", "boolean"),
        Param("ispersistent", "boolean"),
        Param("forvpc", "boolean", description="an offering for VPC tiers"),
        Param("availability", choices=("Optional", "Required")),
        Param("networkrate", "integer", description="Mbit/s"),
        Param("tags", length=4096),
        Param("enable", "boolean", description="create it Enabled", since="4.16"),
    ],
    response="networkoffering",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def create_network_offering(call, args) -> ObjectResult:
    for_vpc = bool(args["forvpc"])
    services = _services_from(args, "VpcVirtualRouter" if for_vpc else "VirtualRouter", vpc=for_vpc)
    if args["guestiptype"] == "L2" and services:
        raise param_error("supportedservices: an L2 network offering has no services")
    if for_vpc and args["guestiptype"] != "Isolated":
        raise param_error("guestiptype must be Isolated for a VPC offering (forvpc=true)")
    if args["networkrate"] is not None and args["networkrate"] <= 0:
        raise param_error(f"networkrate must be positive, not {args['networkrate']}")
    async with call.server.db.sessions() as session:
        await _unique_name(session, NetworkOffering, args["name"], "network offering")
        offering = NetworkOffering(
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            guest_ip_type=args["guestiptype"],
            traffic_type="Guest",
            state="Enabled" if args["enable"] else "Disabled",
            is_default=False,
            is_persistent=bool(args["ispersistent"]),
            specify_vlan=bool(args["specifyvlan"]),
            specify_ip_ranges=bool(args["specifyipranges"]),
            egress_default_policy=args["egressdefaultpolicy"] is not False,
            conserve_mode=args["conservemode"] is not False,
            for_vpc=for_vpc,
            availability=args["availability"] or "Optional",
            network_rate=args["networkrate"],
            tags=args["tags"],
        )
        session.add(offering)
        await session.flush()
        rows = [
            NetworkOfferingService(
                offering_id=offering.id, service=s, provider=p, capabilities=json.dumps(c)
            )
            for s, p, c in services
        ]
        session.add_all(rows)
        await session.commit()
        await call.server.events.record(
            call, "NETWORK.OFFERING.CREATE", f"created network offering {offering.name}", offering
        )
        return ObjectResult("networkoffering", network_offering_fields(offering, rows))


@command(
    "listNetworkOfferings",
    description="Lists network offerings",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("displaytext"),
        Param("state", choices=("Enabled", "Disabled", "Inactive")),
        Param("guestiptype", choices=("Isolated", "Shared", "L2")),
        Param("traffictype", choices=("GUEST", "PUBLIC", "MANAGEMENT", "CONTROL", "STORAGE")),
        Param("zoneid", "uuid", description="offerings usable in this zone (all of them)"),
        Param("isdefault", "boolean"),
        Param("forvpc", "boolean"),
        Param("specifyvlan", "boolean"),
        Param("availability", choices=("Optional", "Required")),
        Param("supportedservices", "list", description="offerings with all these services"),
        Param("networkid", "uuid", description="accepted for compatibility"),
    ],
    list_key="networkoffering",
    since="3.0.0",
)
async def list_network_offerings(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(NetworkOffering).where(NetworkOffering.live())
        if args["zoneid"] and not await session.scalar(
            select(Zone.id).where(Zone.uuid == args["zoneid"], Zone.live())
        ):
            raise not_found("zone", args["zoneid"])
        filters = {
            "id": NetworkOffering.uuid,
            "name": NetworkOffering.name,
            "displaytext": NetworkOffering.display_text,
            "state": NetworkOffering.state,
            "guestiptype": NetworkOffering.guest_ip_type,
            "isdefault": NetworkOffering.is_default,
            "forvpc": NetworkOffering.for_vpc,
            "specifyvlan": NetworkOffering.specify_vlan,
            "availability": NetworkOffering.availability,
        }
        for param, column in filters.items():
            if args[param] is not None:
                query = query.where(column == args[param])
        if args["traffictype"] is not None:
            query = query.where(
                func.lower(NetworkOffering.traffic_type) == args["traffictype"].lower()
            )
        for name in args["supportedservices"] or []:
            service = _canonical(name, SERVICES, "supportedservices")
            query = query.where(
                NetworkOffering.id.in_(
                    select(NetworkOfferingService.offering_id).where(
                        NetworkOfferingService.service == service, NetworkOfferingService.live()
                    )
                )
            )
        query = _keyword(query, args, NetworkOffering.name, NetworkOffering.display_text)
        rows, total = await paged(
            session, query.order_by(NetworkOffering.sort_key, NetworkOffering.id), args
        )
        services = await _services_of(session, NetworkOfferingService, [o.id for o in rows])
        return ListResult(
            "networkoffering", [network_offering_fields(o, services[o.id]) for o in rows], total
        )


@command(
    "updateNetworkOffering",
    description="Updates a network offering: enable or disable it, rename it",
    params=[
        Param("id", "uuid", description="the offering (or give name)"),
        Param("name", description="the offering's name when id is not given; else a new name"),
        Param("displaytext", length=4096),
        Param("state", choices=("Enabled", "Disabled")),
        Param("availability", choices=("Optional", "Required")),
        Param("sortkey", "integer"),
        Param("tags", length=4096),
    ],
    response="networkoffering",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def update_network_offering(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        if args["id"]:
            offering = await _offering(session, NetworkOffering, args["id"], "network offering")
            if args["name"] is not None and args["name"] != offering.name:
                await _unique_name(session, NetworkOffering, args["name"], "network offering")
                offering.name = args["name"]
        elif args["name"]:
            offering = await session.scalar(
                select(NetworkOffering).where(
                    NetworkOffering.name == args["name"], NetworkOffering.live()
                )
            )
            if offering is None:
                raise param_error(f"Unable to find network offering with name {args['name']}")
        else:
            raise param_error("missing parameter id (or name)")
        apply_given(
            offering,
            args,
            (
                ("displaytext", "display_text"),
                ("state", "state"),
                ("availability", "availability"),
                ("sortkey", "sort_key"),
                ("tags", "tags"),
            ),
        )
        await session.commit()
        services = await _services_of(session, NetworkOfferingService, [offering.id])
        await call.server.events.record(
            call, "NETWORK.OFFERING.EDIT", f"updated network offering {offering.name}", offering
        )
        return ObjectResult(
            "networkoffering", network_offering_fields(offering, services[offering.id])
        )


@command(
    "deleteNetworkOffering",
    description="Deletes a network offering (not a default one)",
    params=[Param("id", "uuid", required=True)],
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def delete_network_offering(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, NetworkOffering, args["id"], "network offering")
        if offering.is_default:
            raise param_error("Default network offering can't be deleted")
        used = await session.scalar(
            select(func.count())
            .select_from(Network)
            .where(Network.network_offering_id == offering.id, Network.live())
        )
        if used:
            raise param_error(
                f"Can't delete network offering {offering.name} as its used by {used} "
                "networks. To make the network offering unavailable, disable it"
            )
        offering.remove()
        await session.commit()
        await call.server.events.record(
            call, "NETWORK.OFFERING.DELETE", f"deleted network offering {offering.name}", offering
        )
    return PlainResult({"success": True})


def vpc_offering_fields(o: VpcOffering, services) -> dict:
    return {
        "id": o.uuid,
        "name": o.name,
        "displaytext": o.display_text,
        "isdefault": o.is_default,
        "state": o.state,
        "created": date(o.created),
        "service": _service_fields(services),
        "distributedvpcrouter": False,
        "supportsregionLevelvpc": False,
        "internetprotocol": "ipv4",
        "fornsx": False,
        "hasannotations": False,
    }


@command(
    "createVPCOffering",
    description="Creates a VPC offering (it starts Disabled unless enable=true)",
    params=[
        Param("name", required=True),
        Param("displaytext", length=4096, description="description (default: the name)"),
        *SERVICE_MAP_PARAMS,
        Param("enable", "boolean", description="create it Enabled", since="4.16"),
    ],
    is_async=True,
    creates=True,
    response="vpcoffering",
    roles=ROOT_ONLY,
    instance_type="VpcOffering",
    since="4.0.0",
)
async def create_vpc_offering(call, args) -> ObjectResult:
    if not args["supportedservices"] and not args["serviceproviderlist"]:
        raise param_error("missing parameter supportedservices")
    services = _services_from(args, "VpcVirtualRouter", vpc=True)
    async with call.server.db.sessions() as session:
        await _unique_name(session, VpcOffering, args["name"], "VPC offering")
        offering = VpcOffering(
            **new_id(args),
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            state="Enabled" if args["enable"] else "Disabled",
        )
        session.add(offering)
        await session.flush()
        rows = [
            VpcOfferingService(
                offering_id=offering.id, service=s, provider=p, capabilities=json.dumps(c)
            )
            for s, p, c in services
        ]
        session.add_all(rows)
        await session.commit()
        await call.server.events.record(
            call, "VPC.OFFERING.CREATE", f"created VPC offering {offering.name}", offering
        )
        return ObjectResult("vpcoffering", vpc_offering_fields(offering, rows))


@command(
    "listVPCOfferings",
    description="Lists VPC offerings",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("displaytext"),
        Param("state", choices=("Enabled", "Disabled")),
        Param("isdefault", "boolean"),
        Param("zoneid", "uuid", description="accepted for compatibility"),
        Param("supportedservices", "list"),
    ],
    list_key="vpcoffering",
    since="4.0.0",
)
async def list_vpc_offerings(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(VpcOffering).where(VpcOffering.live())
        filters = {
            "id": VpcOffering.uuid,
            "name": VpcOffering.name,
            "displaytext": VpcOffering.display_text,
            "state": VpcOffering.state,
            "isdefault": VpcOffering.is_default,
        }
        for param, column in filters.items():
            if args[param] is not None:
                query = query.where(column == args[param])
        for name in args["supportedservices"] or []:
            service = _canonical(name, SERVICES, "supportedservices")
            query = query.where(
                VpcOffering.id.in_(
                    select(VpcOfferingService.offering_id).where(
                        VpcOfferingService.service == service, VpcOfferingService.live()
                    )
                )
            )
        query = _keyword(query, args, VpcOffering.name, VpcOffering.display_text)
        rows, total = await paged(
            session, query.order_by(VpcOffering.sort_key, VpcOffering.id), args
        )
        services = await _services_of(session, VpcOfferingService, [o.id for o in rows])
        return ListResult(
            "vpcoffering", [vpc_offering_fields(o, services[o.id]) for o in rows], total
        )


@command(
    "updateVPCOffering",
    description="Updates a VPC offering: enable or disable it, rename it",
    params=[
        Param("id", "uuid", required=True),
        Param("name"),
        Param("displaytext", length=4096),
        Param("state", choices=("Enabled", "Disabled")),
        Param("sortkey", "integer"),
    ],
    is_async=True,
    response="vpcoffering",
    roles=ROOT_ONLY,
    instance_type="VpcOffering",
    since="4.0.0",
)
async def update_vpc_offering(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, VpcOffering, args["id"], "VPC offering")
        if args["name"] is not None and args["name"] != offering.name:
            await _unique_name(session, VpcOffering, args["name"], "VPC offering")
            offering.name = args["name"]
        apply_given(
            offering,
            args,
            (
                ("displaytext", "display_text"),
                ("state", "state"),
                ("sortkey", "sort_key"),
            ),
        )
        await session.commit()
        services = await _services_of(session, VpcOfferingService, [offering.id])
        await call.server.events.record(
            call, "VPC.OFFERING.UPDATE", f"updated VPC offering {offering.name}", offering
        )
        return ObjectResult("vpcoffering", vpc_offering_fields(offering, services[offering.id]))


@command(
    "deleteVPCOffering",
    description="Deletes a VPC offering (not a default one)",
    params=[Param("id", "uuid", required=True)],
    is_async=True,
    roles=ROOT_ONLY,
    instance_type="VpcOffering",
    resumable=True,
    since="4.0.0",
)
async def delete_vpc_offering(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        offering = await _offering(session, VpcOffering, args["id"], "VPC offering")
        if offering.is_default:
            raise param_error("Default VPC offering can't be deleted")
        offering.remove()
        await session.commit()
        await call.server.events.record(
            call, "VPC.OFFERING.DELETE", f"deleted VPC offering {offering.name}", offering
        )
    return PlainResult({"success": True})


# ---------------------------------------------------------------- OS types


@command(
    "listOsCategories",
    description="Lists OS categories",
    params=[*PAGING, Param("id", "uuid"), Param("name")],
    list_key="oscategory",
    since="2.2.0",
)
async def list_os_categories(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(OsCategory).where(OsCategory.live())
        if args["id"]:
            query = query.where(OsCategory.uuid == args["id"])
        if args["name"]:
            query = query.where(OsCategory.name == args["name"])
        query = _keyword(query, args, OsCategory.name)
        rows, total = await paged(session, query.order_by(OsCategory.name), args)
        return ListResult("oscategory", [{"id": c.uuid, "name": c.name} for c in rows], total)


@command(
    "listOsTypes",
    description="Lists OS types (what a template's ostypeid names)",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("oscategoryid", "uuid"),
        Param("description"),
    ],
    list_key="ostype",
    since="2.2.0",
)
async def list_os_types(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = (
            select(OsType, OsCategory)
            .join(OsCategory, OsType.category_id == OsCategory.id)
            .where(OsType.live())
        )
        if args["id"]:
            query = query.where(OsType.uuid == args["id"])
        if args["oscategoryid"]:
            query = query.where(OsCategory.uuid == args["oscategoryid"])
        if args["description"]:
            query = query.where(OsType.description == args["description"])
        query = _keyword(query, args, OsType.description)
        rows, total = await paged(session, query.order_by(OsType.description), args, rows=True)
        return ListResult(
            "ostype",
            [
                {
                    "id": t.uuid,
                    "name": t.description,
                    "description": t.description,
                    "oscategoryid": c.uuid,
                    "oscategoryname": c.name,
                    "isuserdefined": t.is_user_defined,
                    "fordisplay": True,
                }
                for t, c in rows
            ],
            total,
        )


# ---------------------------------------------------------------- templates and ISOs

#: What the secondary storage appliance stores and inspects (ISOs register as ISO).
FORMATS = ("QCOW2", "RAW", "VHD")
HYPERVISORS = ("KVM", "XenServer", "VMware", "Hyperv", "LXC", "Simulator")
TEMPLATE_FILTERS = (
    "featured",
    "self",
    "selfexecutable",
    "sharedexecutable",
    "executable",
    "community",
    "all",
)


class Kind:
    """What differs between templates and ISOs."""

    def __init__(self, iso: bool):
        self.iso = iso
        self.what = "iso" if iso else "template"
        self.event = "ISO" if iso else "TEMPLATE"
        self.filter = "isofilter" if iso else "templatefilter"
        self.tag_type = "ISO" if iso else "Template"  # resourcetype of its tags


TEMPLATE, ISO = Kind(False), Kind(True)


def template_fields(t: Template, tz: TemplateZone | None, zone: Zone | None, names) -> dict:
    os_type, account, domain = (
        names["os"].get(t.os_type_id),
        names["account"].get(t.account_id),
        names["domain"].get(t.domain_id),
    )
    fields = {
        "id": t.uuid,
        "name": t.name,
        "displaytext": t.display_text,
        "ispublic": t.is_public,
        "isfeatured": t.is_featured,
        "isextractable": t.is_extractable,
        "created": date(t.created),
        "isready": bool(tz and tz.is_ready),
        "status": tz.status if tz else None,
        "size": tz.size if tz else None,
        "physicalsize": tz.physical_size if tz else None,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "crossZones": t.cross_zones,
        "passwordenabled": t.password_enabled,
        "bootable": t.bootable,
        "ostypeid": os_type.uuid if os_type else None,
        "ostypename": os_type.description if os_type else None,
        "account": account.name if account else None,
        "accountid": account.uuid if account else None,
        "domain": domain.name if domain else None,
        "domainid": domain.uuid if domain else None,
        "checksum": t.checksum,
        "url": t.url,
        "sshkeyenabled": False,
        "isdynamicallyscalable": False,
        "directdownload": False,
        "downloaddetails": _download_details(tz, zone),
        "tags": [],
        "hasannotations": False,
    }
    if t.format != "ISO":
        fields |= {
            "format": t.format,
            "hypervisor": t.hypervisor,
            "templatetype": t.template_type,
            "requireshvm": t.requires_hvm,
            "deployasis": False,
        }
    return fields


def _download_details(tz: TemplateZone | None, zone: Zone | None) -> list[dict]:
    """CloudStack's per-image-store progress (one store per zone here)."""
    if tz is None or zone is None:
        return []
    return [
        {
            "datastore": f"{zone.name} secondary storage",
            "datastoreRole": "Image",
            "downloadPercent": str(tz.download_percent or 0),
            "downloadState": tz.download_state or image_status.NOT_DOWNLOADED,
        }
    ]


def shown_in_zone():
    """The rows listings show: live and not being deleted."""
    return and_(TemplateZone.live(), TemplateZone.deleting.is_(False))


async def names_for(session, templates) -> dict:
    os_ids = {t.os_type_id for t in templates}
    account_ids = {t.account_id for t in templates}
    os_types = (
        (await session.scalars(select(OsType).where(OsType.id.in_(os_ids)))).all() if os_ids else []
    )
    accounts = (
        (await session.scalars(select(Account).where(Account.id.in_(account_ids)))).all()
        if account_ids
        else []
    )
    return {
        "os": {o.id: o for o in os_types},
        "account": {a.id: a for a in accounts},
        "domain": await _domains_by_id(session, (t.domain_id for t in templates)),
    }


def _kind_clause(kind: Kind):
    return Template.format == "ISO" if kind.iso else Template.format != "ISO"


async def visible_template(session, call, uuid: str, kind: Kind, *, to_change: bool) -> Template:
    """A template the caller may see (own, in its admin scope, or public); to change it the
    caller must own it or administer its owner. Otherwise: not found."""
    base = select(Template).where(Template.uuid == uuid, Template.live(), _kind_clause(kind))
    template = await session.scalar(owned_by(base, Template, call.caller, with_projects=True))
    if template is not None:
        return template
    public = await session.scalar(base.where(or_(Template.is_public, Template.is_featured)))
    if public is None:
        raise not_found(kind.what, uuid)
    if to_change:
        raise ApiError(
            531,
            f"the caller's account does not have permission to operate on "
            f"{kind.what} {uuid}: it belongs to another account",
        )
    return public


async def _zones_param(session, args) -> tuple[list[Zone], bool]:
    """The zones of zoneid / zoneids (-1: every zone); and whether that was 'all'."""
    raw = args.get("zoneids") or ([args["zoneid"]] if args.get("zoneid") else [])
    if not raw:
        raise param_error("missing parameter zoneid (or zoneids; -1 for all zones)")
    if "-1" in raw:
        if len(raw) > 1:
            raise param_error("zoneids: -1 (all zones) cannot be combined with other zones")
        zones = (await session.scalars(select(Zone).where(Zone.live()).order_by(Zone.id))).all()
        if not zones:
            raise param_error("zoneid -1 (all zones): there is no zone yet")
        return list(zones), True
    zones = []
    for value in dict.fromkeys(raw):
        zone = await session.scalar(select(Zone).where(Zone.uuid == value, Zone.live()))
        if zone is None:
            raise not_found("zone", value)
        zones.append(zone)
    return zones, False


async def new_template(session, call, args, kind: Kind, checksum: str | None,
                       all_zones: bool) -> Template:
    """A Template row from register / getUploadParams arguments (not added yet): its OS
    type, and its owner (the caller, or with projectid the project's account)."""
    caller = call.caller
    is_admin = caller.is_root_admin or caller.is_domain_admin
    os_type = await session.scalar(
        select(OsType).where(OsType.uuid == args["ostypeid"], OsType.live())
    )
    if os_type is None:
        raise not_found("OS type", args["ostypeid"])
    # With projectid the project's own account owns it (its members share it).
    owner_id, owner_domain_id = caller.account_id, caller.domain_id
    if args["projectid"]:
        project = await visible_project(session, caller, args["projectid"])
        owner_id, owner_domain_id = project.account_id, project.domain_id
    if kind.iso:
        fmt, hypervisor = "ISO", None
    else:
        fmt, hypervisor = args["format"], args["hypervisor"]
    return Template(
        name=args["name"],
        display_text=args["displaytext"] or args["name"],
        format=fmt,
        hypervisor=hypervisor,
        os_type_id=os_type.id,
        checksum=checksum,
        is_public=bool(args["ispublic"]),
        is_featured=bool(args["isfeatured"]) and is_admin,
        is_extractable=bool(args["isextractable"]),
        password_enabled=bool(args.get("passwordenabled")),
        requires_hvm=args.get("requireshvm") is not False,
        bootable=args.get("bootable") is not False,
        cross_zones=all_zones,
        account_id=owner_id,
        domain_id=owner_domain_id,
    )


async def _register(call, args, kind: Kind) -> ListResult:
    async with call.server.db.sessions() as session:
        sites = await get_setting(session, "secstorage.allowed.internal.sites")
        check_url(args["url"], internal_sites(str(sites)))
        checksum = check_checksum(args["checksum"])
        zones, all_zones = await _zones_param(session, args)
        template = await new_template(session, call, args, kind, checksum, all_zones)
        template.url = args["url"]
        session.add(template)
        await session.flush()
        refs = [
            TemplateZone(
                template_id=template.id,
                zone_id=z.id,
                status=image_status.PENDING,
                download_state=image_status.NOT_DOWNLOADED,
                download_percent=0,
            )
            for z in zones
        ]
        session.add_all(refs)
        await session.commit()
        names = await names_for(session, [template])
        await call.server.events.record(
            call, f"{kind.event}.CREATE", f"registered {kind.what} {template.name}", template
        )
        images_changed(call, [z.id for z in zones])
        return ListResult(
            kind.what,
            [template_fields(template, tz, z, names) for tz, z in zip(refs, zones, strict=True)],
        )


def _scope(caller):
    """The templates whose owners the caller administers (or owns): a WHERE clause."""
    clause = owned_by(select(Template.id), Template, caller).whereclause
    return true() if clause is None else clause


def _filter_clause(call, args, kind: Kind, project_account: int | None = None):
    """The rows a templatefilter / isofilter selects for the caller (with a project: among
    the project's rows)."""
    caller, name = call.caller, args[kind.filter]
    ready = TemplateZone.is_ready.is_(True)
    if project_account is not None:
        mine = Template.account_id == project_account
        return and_(mine, ready) if name in ("selfexecutable", "executable") else mine
    # Admins list the rows of the accounts they administer with listall=true.
    is_admin = caller.is_root_admin or caller.is_domain_admin
    mine = (
        _scope(caller)
        if is_admin and args.get("listall")
        else (Template.account_id == caller.account_id)
    )
    if name == "all":
        if not caller.is_root_admin:
            raise param_error(f"Filter all can be specified by admin only ({kind.filter}=all)")
        return true()
    if name == "featured":
        return Template.is_featured.is_(True)
    if name == "self":
        return mine
    if name == "selfexecutable":
        return and_(mine, ready)
    if name == "sharedexecutable":
        return false()  # sharing with single accounts (updateTemplatePermissions) comes later
    if name == "executable":
        return and_(ready, or_(Template.is_public, Template.is_featured, _scope(caller)))
    # community
    return and_(Template.is_public.is_(True), Template.is_featured.is_(False))


async def _list(call, args, kind: Kind) -> ListResult:
    async with call.server.db.sessions() as session:
        project_account = None
        if args["projectid"]:
            project_account = (
                await visible_project(session, call.caller, args["projectid"])
            ).account_id
        query = (
            select(Template, TemplateZone, Zone)
            .outerjoin(TemplateZone, and_(TemplateZone.template_id == Template.id, shown_in_zone()))
            .outerjoin(Zone, TemplateZone.zone_id == Zone.id)
            .where(
                Template.live(),
                _kind_clause(kind),
                _filter_clause(call, args, kind, project_account),
            )
        )
        if args["id"]:
            query = query.where(Template.uuid == args["id"])
        if args["name"]:
            query = query.where(Template.name == args["name"])
        if args["zoneid"]:
            query = query.where(Zone.uuid == args["zoneid"])
        if not kind.iso and args["hypervisor"]:
            query = query.where(func.lower(Template.hypervisor) == args["hypervisor"].lower())
        if kind.iso and args["bootable"] is not None:
            query = query.where(Template.bootable.is_(args["bootable"]))
        if kind.iso and args["isready"] is not None:
            query = query.where(TemplateZone.is_ready.is_(args["isready"]))
        if kind.iso and args["ispublic"] is not None:
            query = query.where(Template.is_public.is_(args["ispublic"]))
        query = _keyword(query, args, Template.name, Template.display_text)
        rows, total = await paged(
            session,
            query.order_by(Template.sort_key, Template.id, TemplateZone.id),
            args,
            rows=True,
        )
        names = await names_for(session, [t for t, _, _ in rows])
        tags = await tags_for(session, kind.tag_type, (t.id for t, _, _ in rows))
        return ListResult(
            kind.what,
            [template_fields(t, tz, z, names) | {"tags": tags.get(t.id, [])} for t, tz, z in rows],
            total,
        )


async def _update(call, args, kind: Kind) -> ObjectResult:
    async with call.server.db.sessions() as session:
        template = await visible_template(session, call, args["id"], kind, to_change=True)
        if args["ostypeid"]:
            os_type = await session.scalar(
                select(OsType).where(OsType.uuid == args["ostypeid"], OsType.live())
            )
            if os_type is None:
                raise not_found("OS type", args["ostypeid"])
            template.os_type_id = os_type.id
        changes = [
            ("name", "name"),
            ("displaytext", "display_text"),
            ("sortkey", "sort_key"),
            ("bootable", "bootable"),
            ("passwordenabled", "password_enabled"),
        ]
        if not kind.iso:
            changes += [("format", "format"), ("requireshvm", "requires_hvm")]
        for param, attr in changes:
            if args.get(param) is not None:
                setattr(template, attr, args[param])
        await session.commit()
        ref = await session.scalar(
            select(TemplateZone)
            .where(TemplateZone.template_id == template.id, shown_in_zone())
            .order_by(TemplateZone.id)
        )
        zone = await session.get(Zone, ref.zone_id) if ref else None
        names = await names_for(session, [template])
        await call.server.events.record(
            call, f"{kind.event}.UPDATE", f"updated {kind.what} {template.name}", template
        )
        tags = await tags_for(session, kind.tag_type, [template.id])
        return ObjectResult(
            kind.what,
            template_fields(template, ref, zone, names) | {"tags": tags.get(template.id, [])},
        )


async def _delete(call, args, kind: Kind) -> PlainResult:
    async with call.server.db.sessions() as session:
        template = await visible_template(session, call, args["id"], kind, to_change=True)
        refs = (
            await session.scalars(
                select(TemplateZone).where(TemplateZone.template_id == template.id, shown_in_zone())
            )
        ).all()
        if args["zoneid"]:
            zone = await session.scalar(select(Zone).where(Zone.uuid == args["zoneid"]))
            chosen = [r for r in refs if zone is not None and r.zone_id == zone.id]
            if not chosen:
                raise param_error(
                    f"{kind.what} {args['id']} is not registered in zone {args['zoneid']}"
                )
        else:
            chosen = list(refs)
        for ref in chosen:
            forget(ref)
        if len(chosen) == len(refs):
            template.remove()
        await session.commit()
        await call.server.events.record(
            call, f"{kind.event}.DELETE", f"deleted {kind.what} {template.name}", template
        )
    images_changed(call, [r.zone_id for r in chosen])
    return PlainResult({"success": True})


def forget(ref: TemplateZone) -> None:
    """Delete a template from a zone: at once when no appliance ever stored a byte of it,
    else hidden and named absent in the zone's document until the appliance confirms."""
    if ref.download_state in image_status.NOTHING_STORED:
        ref.remove()
    else:
        ref.deleting, ref.is_ready = True, False


def images_changed(call, zone_ids) -> None:
    """Push the zones' storage documents (in the background)."""
    orch = getattr(call.server, "orchestrator", None)
    if orch is not None:
        image_status.changed(orch, zone_ids)


#: What a template (not an ISO) declares about its disk, registered or uploaded.
TEMPLATE_DISK = (
    Param("format", required=True, choices=FORMATS),
    Param("hypervisor", required=True, choices=HYPERVISORS),
    Param("passwordenabled", "boolean"),
    Param("requireshvm", "boolean", description="default true"),
    Param("sshkeyenabled", "boolean"),
    Param("isdynamicallyscalable", "boolean"),
)

REGISTER_COMMON = (
    Param("name", required=True),
    Param("displaytext", length=4096, description="description (default: the name)"),
    Param("url", required=True, length=2048, description="http(s) URL to download from"),
    Param("ostypeid", "uuid", required=True, description="see listOsTypes"),
    Param("zoneid", description="the zone, or -1 for all zones"),
    Param("zoneids", "list", description="several zones (or -1)", since="4.14"),
    Param(
        "checksum",
        description="{MD5}, {SHA-1}, {SHA-256}, {SHA-512}... followed by hex, or bare hex "
        "(its length names the algorithm); verified before the template is ready",
    ),
    Param("ispublic", "boolean", description="usable by every account"),
    Param("isfeatured", "boolean", description="listed as featured (admins only)"),
    Param("isextractable", "boolean"),
    Param("account", description="accepted for compatibility (the caller owns it)"),
    Param("domainid", "uuid", description="accepted for compatibility"),
    Param("projectid", "uuid", description="the project that owns it", resource="project"),
)
LIST_COMMON = (
    *PAGING,
    Param("id", "uuid", resource="template"),
    Param("name"),
    Param("zoneid", "uuid"),
    Param("account"),
    Param("domainid", "uuid"),
    Param("listall", "boolean", description="admins: the templates of accounts they administer"),
    Param("isrecursive", "boolean"),
    Param("projectid", "uuid", description="the project's templates", resource="project"),
    Param("showremoved", "boolean", description="accepted for compatibility"),
)


@command(
    "registerTemplate",
    description="Registers a template from a URL (downloaded by the zone's image store)",
    params=[
        *REGISTER_COMMON,
        *TEMPLATE_DISK,
    ],
    list_key="template",
    since="1.0.0",
)
async def register_template(call, args) -> ListResult:
    return await _register(call, args, TEMPLATE)


@command(
    "listTemplates",
    description="Lists templates; templatefilter chooses which of the visible ones",
    params=[
        Param(
            "templatefilter",
            required=True,
            choices=TEMPLATE_FILTERS,
            description="featured, self, selfexecutable, sharedexecutable, executable, "
            "community or all (root admin)",
        ),
        *LIST_COMMON,
        Param("hypervisor"),
        Param("templatetype", description="accepted for compatibility"),
    ],
    list_key="template",
    since="1.0.0",
)
async def list_templates(call, args) -> ListResult:
    return await _list(call, args, TEMPLATE)


@command(
    "updateTemplate",
    description="Updates a template's attributes",
    params=[
        Param("id", "uuid", required=True, resource="template"),
        Param("name"),
        Param("displaytext", length=4096),
        Param("format", choices=FORMATS),
        Param("ostypeid", "uuid"),
        Param("passwordenabled", "boolean"),
        Param("bootable", "boolean"),
        Param("requireshvm", "boolean"),
        Param("sortkey", "integer"),
    ],
    response="template",
    since="1.0.0",
)
async def update_template(call, args) -> ObjectResult:
    return await _update(call, args, TEMPLATE)


@command(
    "deleteTemplate",
    description="Deletes a template from one zone (zoneid) or from all of them",
    params=[
        Param("id", "uuid", required=True, resource="template"),
        Param("zoneid", "uuid"),
        Param("forced", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    instance_type="Template",
    resumable=True,
    since="1.0.0",
)
async def delete_template(call, args) -> PlainResult:
    return await _delete(call, args, TEMPLATE)


@command(
    "registerIso",
    description="Registers an ISO image from a URL",
    params=[*REGISTER_COMMON, Param("bootable", "boolean", description="default true")],
    list_key="iso",
    roles=ALL_ROLES,
    since="1.0.0",
)
async def register_iso(call, args) -> ListResult:
    return await _register(call, args, ISO)


@command(
    "listIsos",
    description="Lists ISO images; isofilter chooses which of the visible ones",
    params=[
        Param("isofilter", choices=TEMPLATE_FILTERS, description="default selfexecutable"),
        *LIST_COMMON,
        Param("bootable", "boolean"),
        Param("isready", "boolean"),
        Param("ispublic", "boolean"),
        Param("hypervisor", description="accepted for compatibility"),
    ],
    list_key="iso",
    since="1.0.0",
)
async def list_isos(call, args) -> ListResult:
    args["isofilter"] = args["isofilter"] or "selfexecutable"
    return await _list(call, args, ISO)


@command(
    "updateIso",
    description="Updates an ISO image's attributes",
    params=[
        Param("id", "uuid", required=True, resource="template"),
        Param("name"),
        Param("displaytext", length=4096),
        Param("ostypeid", "uuid"),
        Param("bootable", "boolean"),
        Param("passwordenabled", "boolean"),
        Param("sortkey", "integer"),
    ],
    response="iso",
    since="1.0.0",
)
async def update_iso(call, args) -> ObjectResult:
    return await _update(call, args, ISO)


@command(
    "deleteIso",
    description="Deletes an ISO image from one zone (zoneid) or from all of them",
    params=[Param("id", "uuid", required=True, resource="template"), Param("zoneid", "uuid")],
    is_async=True,
    instance_type="Iso",
    resumable=True,
    since="1.0.0",
)
async def delete_iso(call, args) -> PlainResult:
    return await _delete(call, args, ISO)
