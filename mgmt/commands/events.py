"""Events and alerts: listEvents, deleteEvents, archiveEvents; listAlerts, deleteAlerts,
archiveAlerts.

Events follow tenancy and CloudStack's listing scope (mgmt.commands.scope): a user
sees its account's, a domain admin (with listall, domainid or account) those of its
subtree, a root admin all. Deleting or archiving
hides events from listEvents (the row stays, marked removed). Alerts are the root
admin's; mgmt.server.alerts raises them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select

from mgmt.api.envelope import ListResult, PlainResult
from mgmt.api.errors import param_error
from mgmt.api.registry import PAGING, ROOT_ONLY, SCOPE, Param, command
from mgmt.commands.common import date, not_found, paged
from mgmt.commands.scope import scoped
from mgmt.db.models import Account, Domain, Event, User
from mgmt.db.models.misc import Alert
from mgmt.db.tenancy import owned_by
from mgmt.db.types import utcnow


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _range(query, column, args):
    if args["startdate"]:
        query = query.where(column >= _utc(args["startdate"]))
    if args["enddate"]:
        end = _utc(args["enddate"])
        if end.hour == end.minute == end.second == 0:  # a bare date: the whole day
            end = end.replace(hour=23, minute=59, second=59, microsecond=999999)
        query = query.where(column <= end)
    return query


def event_fields(
    e: Event, account: Account | None, domain: Domain | None, user: User | None
) -> dict:
    return {
        "id": e.uuid,
        "type": e.type,
        "level": e.level,
        "description": e.description,
        "state": e.state,
        "created": date(e.created),
        "account": account.name if account else None,
        "domain": domain.name if domain else None,
        "domainid": domain.uuid if domain else None,
        "username": user.username if user else None,
        "resourceid": e.resource_uuid,
        "resourcetype": e.resource_type,
    }


@command(
    "listEvents",
    description="Lists events",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", description="the event"),
        Param("type", description="e.g. ZONE.CREATE"),
        Param("level", choices=("INFO", "WARN", "ERROR"), description="INFO, WARN or ERROR"),
        Param("startdate", "date", description="events from this date (UTC)"),
        Param("enddate", "date", description="events up to this date (UTC)"),
        Param("entrytime", "integer", description="accepted for compatibility"),
        Param("duration", "integer", description="accepted for compatibility"),
        Param("resourceid", description="events about this object"),
        Param("resourcetype", description="events about objects of this type"),
    ],
    list_key="event",
    since="1.0.0",
)
async def list_events(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = (
            select(Event, Account, Domain, User)
            .outerjoin(Account, Account.id == Event.account_id)
            .outerjoin(Domain, Domain.id == Event.domain_id)
            .outerjoin(User, User.id == Event.user_id)
            .where(Event.live())
        )
        query = await scoped(session, call.caller, args, query, Event)
        if args["id"]:
            query = query.where(Event.uuid == args["id"])
        if args["type"]:
            query = query.where(Event.type == args["type"].upper())
        if args["level"]:
            query = query.where(Event.level == args["level"])
        if args["resourceid"]:
            query = query.where(Event.resource_uuid == args["resourceid"])
        if args["resourcetype"]:
            query = query.where(Event.resource_type == args["resourcetype"])
        query = _range(query, Event.created, args)
        if args["keyword"]:
            query = query.where(
                or_(
                    Event.type.contains(args["keyword"], autoescape=True),
                    Event.description.contains(args["keyword"], autoescape=True),
                )
            )
        rows, total = await paged(session, query.order_by(Event.id.desc()), args, rows=True)
        return ListResult("event", [event_fields(*row) for row in rows], total)


CLEANUP = (
    Param("ids", "list", items="uuid", description="the events (or alerts)"),
    Param("type", description="those of this type"),
    Param("startdate", "date", description="those from this date"),
    Param("enddate", "date", description="those up to this date"),
)


async def _remove_events(call, args, verb: str) -> PlainResult:
    if not (args["ids"] or args["type"] or args["enddate"] or args["startdate"]):
        raise param_error(f"{verb}: give ids, or a type and/or a date range (startdate, enddate)")
    async with call.server.db.sessions() as session:
        query = owned_by(select(Event).where(Event.live()), Event, call.caller)
        if args["ids"]:
            query = query.where(Event.uuid.in_(args["ids"]))
        if args["type"]:
            query = query.where(Event.type == args["type"].upper())
        events = (await session.scalars(_range(query, Event.created, args))).all()
        if args["ids"]:
            found = {e.uuid for e in events}
            for uuid in args["ids"]:
                if uuid not in found:
                    raise not_found("event", uuid)
        now = utcnow()
        for event in events:
            event.removed = now
        await session.commit()
    return PlainResult({"success": True})


@command(
    "deleteEvents",
    description="Deletes events: ids, or those of a type and/or date range",
    params=list(CLEANUP),
    since="4.0.0",
)
async def delete_events(call, args) -> PlainResult:
    return await _remove_events(call, args, "deleteEvents")


@command(
    "archiveEvents",
    description="Archives events (listEvents no longer shows them): ids, or those of a type "
    "and/or date range",
    params=list(CLEANUP),
    since="4.0.0",
)
async def archive_events(call, args) -> PlainResult:
    return await _remove_events(call, args, "archiveEvents")


# ---------------------------------------------------------------- alerts

#: CloudStack's alert types (AlertManager.AlertType), by number.
ALERT_TYPES = {
    0: "ALERT.MEMORY",
    1: "ALERT.CPU",
    2: "ALERT.STORAGE",
    3: "ALERT.STORAGE.ALLOCATED",
    4: "ALERT.NETWORK.PUBLICIP",
    5: "ALERT.NETWORK.PRIVATEIP",
    6: "ALERT.STORAGE.SECONDARY",
    7: "ALERT.COMPUTE.HOST",
    8: "ALERT.USERVM",
    9: "ALERT.SERVICE.DOMAINROUTER",
    10: "ALERT.SERVICE.CONSOLEPROXY",
    11: "ALERT.NETWORK.ROUTING",
    12: "ALERT.STORAGE.MISC",
    13: "ALERT.USAGE",
    14: "ALERT.MANAGEMENT",
    18: "ALERT.SERVICE.SSVM",
}


def alert_fields(a: Alert) -> dict:
    return {
        "id": a.uuid,
        "type": a.type,
        "name": ALERT_TYPES.get(a.type, f"ALERT.TYPE.{a.type}"),
        "subject": a.subject,
        "description": a.subject if not a.description else f"{a.subject}: {a.description}",
        "sent": date(a.sent),
    }


@command(
    "listAlerts",
    description="Lists alerts (archived ones are not shown)",
    params=[
        *PAGING,
        Param("id", "uuid", description="the alert"),
        Param("type", "integer", description="alert type number"),
        Param("name", description="alert type name, e.g. ALERT.SERVICE.DOMAINROUTER"),
    ],
    list_key="alert",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def list_alerts(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Alert).where(Alert.live(), Alert.archived.is_(False))
        if args["id"]:
            query = query.where(Alert.uuid == args["id"])
        if args["type"] is not None:
            query = query.where(Alert.type == args["type"])
        if args["name"]:
            numbers = [n for n, name in ALERT_TYPES.items() if name == args["name"].upper()]
            query = query.where(Alert.type.in_(numbers))
        if args["keyword"]:
            query = query.where(
                or_(
                    Alert.subject.contains(args["keyword"], autoescape=True),
                    Alert.description.contains(args["keyword"], autoescape=True),
                )
            )
        alerts, total = await paged(session, query.order_by(Alert.id.desc()), args)
        return ListResult("alert", [alert_fields(a) for a in alerts], total)


async def _remove_alerts(call, args, verb: str, archive: bool) -> PlainResult:
    if not (args["ids"] or args["type"] or args["enddate"] or args["startdate"]):
        raise param_error(f"{verb}: give ids, or a type and/or a date range (startdate, enddate)")
    async with call.server.db.sessions() as session:
        query = select(Alert).where(Alert.live(), Alert.archived.is_(False))
        if args["ids"]:
            query = query.where(Alert.uuid.in_(args["ids"]))
        if args["type"]:
            try:
                query = query.where(Alert.type == int(args["type"]))
            except ValueError:
                raise param_error(
                    f"invalid value for type: {args['type']!r} is not an alert type number"
                ) from None
        alerts = (await session.scalars(_range(query, Alert.sent, args))).all()
        if args["ids"]:
            found = {a.uuid for a in alerts}
            for uuid in args["ids"]:
                if uuid not in found:
                    raise not_found("alert", uuid)
        now = utcnow()
        for alert in alerts:
            if archive:
                alert.archived = True
            else:
                alert.removed = now
        await session.commit()
    return PlainResult({"success": True})


@command(
    "deleteAlerts",
    description="Deletes alerts: ids, or those of a type and/or dates",
    params=list(CLEANUP),
    roles=ROOT_ONLY,
    since="4.0.0",
)
async def delete_alerts(call, args) -> PlainResult:
    return await _remove_alerts(call, args, "deleteAlerts", archive=False)


@command(
    "archiveAlerts",
    description="Archives alerts: ids, or those of a type and/or dates",
    params=list(CLEANUP),
    roles=ROOT_ONLY,
    since="4.0.0",
)
async def archive_alerts(call, args) -> PlainResult:
    return await _remove_alerts(call, args, "archiveAlerts", archive=True)
