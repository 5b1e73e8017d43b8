"""Settings: listConfigurations, updateConfiguration (root admin).

A setting has one scope (global, zone, domain or account, see mgmt.db.settings).
Its global value lives in ``configuration``; a value for one zone, domain or
account (zoneid / domainid / accountid) in ``configuration_values``. Changing
an api.throttling.* setting applies to this server's rate limiter at once.
"""

from __future__ import annotations

from sqlalchemy import or_, select

from mgmt.api.envelope import ListResult, ObjectResult
from mgmt.api.errors import param_error
from mgmt.api.registry import PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import not_found, paged
from mgmt.db.models import Account, Configuration, Domain, Zone
from mgmt.db.models.misc import ConfigurationValue
from mgmt.db.settings import BY_NAME, THROTTLING, render, throttling

SCOPE_PARAMS = (
    Param("zoneid", "uuid", description="the zone whose value to use (zone-scoped settings)"),
    Param(
        "domainid",
        "uuid",
        description="the domain whose value to use (domain-scoped settings)",
        resource="domain",
    ),
    Param(
        "accountid",
        "uuid",
        description="the account whose value to use (account-scoped settings)",
        resource="account",
    ),
)
SCOPE_MODELS = {
    "zoneid": ("zone", Zone),
    "domainid": ("domain", Domain),
    "accountid": ("account", Account),
}


async def _scope(session, args) -> tuple[str, int, str] | None:
    """(scope, internal id, uuid) of the one of zoneid/domainid/accountid given, if any."""
    given = [name for name in SCOPE_MODELS if args[name]]
    if not given:
        return None
    if len(given) > 1:
        raise param_error(f"give only one of zoneid, domainid, accountid (got {', '.join(given)})")
    level, model = SCOPE_MODELS[given[0]]
    uuid = args[given[0]]
    row_id = await session.scalar(select(model.id).where(model.uuid == uuid, model.live()))
    if row_id is None:
        raise not_found(level, uuid)
    return level, row_id, uuid


def _fields(row: Configuration, value: str | None, scope: tuple | None) -> dict:
    setting = BY_NAME.get(row.name)
    return {
        "name": row.name,
        "value": value,
        "defaultvalue": row.default_value,
        "category": row.category,
        "description": row.description,
        "scope": row.scope,
        "type": row.type,
        "isdynamic": setting.dynamic if setting else False,
        "id": scope[2] if scope else None,
    }


@command(
    "listConfigurations",
    description="Lists settings; with zoneid, domainid or accountid, the settings of that "
    "scope with their value there",
    params=[
        *PAGING,
        Param("name", description="the setting's name"),
        Param("category", description="e.g. Advanced, Network"),
        *SCOPE_PARAMS,
    ],
    list_key="configuration",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def list_configurations(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        scope = await _scope(session, args)
        query = select(Configuration).where(Configuration.live()).order_by(Configuration.name)
        if args["name"]:
            query = query.where(Configuration.name == args["name"])
        if args["category"]:
            query = query.where(Configuration.category == args["category"])
        if args["keyword"]:
            query = query.where(
                or_(
                    Configuration.name.contains(args["keyword"], autoescape=True),
                    Configuration.description.contains(args["keyword"], autoescape=True),
                )
            )
        if scope:
            query = query.where(Configuration.scope == scope[0])
        rows, total = await paged(session, query, args)
        scoped: dict[str, str] = {}
        if scope and rows:
            scoped = dict(
                (
                    await session.execute(
                        select(ConfigurationValue.name, ConfigurationValue.value).where(
                            ConfigurationValue.scope == scope[0],
                            ConfigurationValue.scope_id == scope[1],
                            ConfigurationValue.name.in_([r.name for r in rows]),
                            ConfigurationValue.live(),
                        )
                    )
                ).all()
            )
        items = [_fields(r, scoped.get(r.name, r.value), scope) for r in rows]
        return ListResult("configuration", items, total)


@command(
    "updateConfiguration",
    description="Changes a setting, globally or (zoneid, domainid, accountid) for one zone, "
    "domain or account when the setting has that scope",
    params=[
        Param("name", required=True, description="the setting's name"),
        Param("value", required=True, length=4096, description="the new value"),
        *SCOPE_PARAMS,
    ],
    response="configuration",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def update_configuration(call, args) -> ObjectResult:
    name, text = args["name"], args["value"]
    setting = BY_NAME.get(name)
    if setting is None:
        raise param_error(f"Unknown configuration {name!r}: cannot set it to {text[:60]!r}")
    try:
        value = setting.validate(text)
    except ValueError as exc:
        raise param_error(
            f"Invalid value for configuration {name} ({setting.type}): {exc}"
        ) from None
    stored = render(value)
    async with call.server.db.sessions() as session:
        scope = await _scope(session, args)
        if scope and scope[0] != setting.scope:
            raise param_error(
                f"configuration {name} has {setting.scope} scope; it cannot be set for a "
                f"{scope[0]} ({text[:60]!r} not applied)"
            )
        row = await session.scalar(
            select(Configuration).where(Configuration.name == name, Configuration.live())
        )
        if row is None:  # not stored yet (a setting added since the last start)
            row = Configuration(
                name=name,
                default_value=render(setting.default),
                value=render(setting.default),
                type=setting.type,
                category=setting.category,
                description=setting.description,
                scope=setting.scope,
            )
            session.add(row)
        if scope is None:
            row.value = stored
        else:
            override = await session.scalar(
                select(ConfigurationValue).where(
                    ConfigurationValue.name == name,
                    ConfigurationValue.scope == scope[0],
                    ConfigurationValue.scope_id == scope[1],
                    ConfigurationValue.live(),
                )
            )
            if override is None:
                session.add(
                    ConfigurationValue(name=name, scope=scope[0], scope_id=scope[1], value=stored)
                )
            else:
                override.value = stored
        await session.commit()
        if name in THROTTLING and scope is None:
            call.server.set_throttling(*await throttling(session))
        fields = _fields(row, stored, scope)
    where = f" for {scope[0]} {scope[2]}" if scope else ""
    await call.server.events.record(
        call, "CONFIGURATION.VALUE.EDIT", f"set {name} to {stored}{where}"
    )
    return ObjectResult("configuration", fields)
