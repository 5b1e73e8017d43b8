"""Zones: createZone, listZones, updateZone, deleteZone."""

from __future__ import annotations

from sqlalchemy import or_, select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult, RawJson
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import apply_given, json_paged, not_found
from mgmt.commands.infra import zone_contents
from mgmt.commands.tags import tags_member
from mgmt.db.jsonpage import JsonConst, JsonField, JsonShape, json_one
from mgmt.db.models import Zone
from mgmt.db.types import utcnow
from mgmt.orchestration import systemvms

#: A zone as every answer shows it (listZones, createZone, updateZone).
ZONE = JsonShape(
    JsonField("id", Zone.uuid),
    JsonField("name", Zone.name),
    JsonField("description", Zone.description),
    JsonField("dns1", Zone.dns1),
    JsonField("dns2", Zone.dns2),
    JsonField("internaldns1", Zone.internal_dns1),
    JsonField("internaldns2", Zone.internal_dns2),
    JsonField("guestcidraddress", Zone.guest_cidr),
    JsonField("networktype", Zone.network_type),
    JsonField("allocationstate", Zone.allocation_state),
    JsonConst("dhcpprovider", "VirtualRouter"),
    JsonConst("localstorageenabled", False),
    JsonConst("securitygroupsenabled", False),
    JsonField("created", Zone.created, "date"),
    tags_member("Zone", Zone.id),
    JsonConst("hasannotations", False),
)


async def zone_answer(session, zone: Zone) -> ObjectResult:
    text = await json_one(session, select(Zone.id).where(Zone.id == zone.id), ZONE)
    return ObjectResult("zone", RawJson(text))


ZONE_PARAMS = [
    Param("dns1", description="first DNS server for guests"),
    Param("dns2", description="second DNS server for guests"),
    Param("internaldns1", description="first DNS server for system VMs"),
    Param("internaldns2", description="second DNS server for system VMs"),
    Param("guestcidraddress", description="default guest network CIDR"),
    Param("description", description="free text"),
]


@command(
    "createZone",
    description="Creates a zone (advanced networking)",
    params=[
        Param("name", required=True, description="zone name"),
        Param(
            "networktype",
            required=True,
            choices=("Advanced", "Basic"),
            description="Advanced (isolated networks and VPCs); Basic is not supported",
        ),
        Param("allocationstate", choices=("Enabled", "Disabled"), description="default Disabled"),
        *ZONE_PARAMS,
    ],
    response="zone",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def create_zone(call, args) -> ObjectResult:
    if args["networktype"] != "Advanced":
        raise param_error("networktype Basic is not supported; use Advanced")
    async with call.server.db.sessions() as session:
        if await session.scalar(
            select(Zone.id).where(Zone.name == args["name"], Zone.removed.is_(None))
        ):
            raise ApiError(431, f"a zone named {args['name']} exists already")
        zone = Zone(
            name=args["name"],
            network_type="Advanced",
            allocation_state=args["allocationstate"] or "Disabled",
            dns1=args["dns1"],
            dns2=args["dns2"],
            internal_dns1=args["internaldns1"],
            internal_dns2=args["internaldns2"],
            guest_cidr=args["guestcidraddress"],
            description=args["description"],
        )
        session.add(zone)
        await session.commit()
        await call.server.events.record(call, "ZONE.CREATE", f"created zone {zone.name}", zone)
        return await zone_answer(session, zone)


@command(
    "listZones",
    description="Lists zones",
    params=[
        *PAGING,
        Param("id", "uuid", description="the zone"),
        Param("name", description="zone name"),
        Param("available", "boolean", description="only zones the caller can deploy to"),
        Param("networktype", choices=("Advanced", "Basic")),
        Param("showcapacities", "boolean", description="accepted for compatibility"),
    ],
    list_key="zone",
    since="1.0.0",
)
async def list_zones(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Zone.id).where(Zone.removed.is_(None))
        if args["id"]:
            query = query.where(Zone.uuid == args["id"])
        if args["name"]:
            query = query.where(Zone.name == args["name"])
        if args["networktype"]:
            query = query.where(Zone.network_type == args["networktype"])
        if args["keyword"]:
            query = query.where(
                or_(
                    Zone.name.contains(args["keyword"], autoescape=True),
                    Zone.description.contains(args["keyword"], autoescape=True),
                )
            )
        if call.role != "Admin" or args["available"]:
            query = query.where(Zone.allocation_state == "Enabled")
        page = await json_paged(session, query, ZONE, args, order_by=[Zone.id])
        return ListResult("zone", RawJson(page.items), page.count)


@command(
    "updateZone",
    description="Updates a zone",
    params=[
        Param("id", "uuid", required=True, description="the zone"),
        Param("name", description="new name"),
        Param("allocationstate", choices=("Enabled", "Disabled")),
        *ZONE_PARAMS,
    ],
    response="zone",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def update_zone(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        zone = await session.scalar(
            select(Zone).where(Zone.uuid == args["id"], Zone.removed.is_(None))
        )
        if zone is None:
            raise not_found("zone", args["id"])
        changes = {
            "name": "name",
            "allocationstate": "allocation_state",
            "dns1": "dns1",
            "dns2": "dns2",
            "internaldns1": "internal_dns1",
            "internaldns2": "internal_dns2",
            "guestcidraddress": "guest_cidr",
            "description": "description",
        }
        apply_given(zone, args, changes)
        await session.commit()
        await call.server.events.record(call, "ZONE.EDIT", f"updated zone {zone.name}", zone)
        if zone.allocation_state == "Enabled":
            systemvms.kick(call.server.orchestrator)  # its system VMs, if it is ready
        return await zone_answer(session, zone)


@command(
    "deleteZone",
    description="Deletes a zone",
    params=[Param("id", "uuid", required=True, description="the zone")],
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def delete_zone(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        zone = await session.scalar(
            select(Zone).where(Zone.uuid == args["id"], Zone.removed.is_(None))
        )
        if zone is None:
            raise not_found("zone", args["id"])
        contents = await zone_contents(session, zone.id)
        if contents:
            raise ApiError(
                536, f"zone {zone.name} still has {', '.join(contents)}; delete them first"
            )
        zone.removed = utcnow()
        await session.commit()
        await call.server.events.record(call, "ZONE.DELETE", f"deleted zone {zone.name}", zone)
    return PlainResult({"success": True})
