"""Resource tags: createTags, deleteTags, listTags.

What can be tagged is a registry: one :func:`taggable` call per kind names its
CloudStack ``resourcetype``, its table and whether an account owns its rows.
The tags of an account-owned object belong to the object's owner, so that
listTags shows them to whoever may see the object; tags of objects no account
owns (zones) are visible to every caller, and only a root admin changes them.
Listings put an object's tags in its ``tags`` field through :func:`tags_for`, or,
when the database renders them, :func:`tags_member`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, true

from mgmt.api.envelope import ListResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, Param, command
from mgmt.commands.common import not_found, paged
from mgmt.db.jsonpage import JsonArray, JsonConst, JsonField, JsonShape, outer
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.catalog import Template
from mgmt.db.models.misc import ResourceTag
from mgmt.db.tenancy import owned_by
from mgmt.db.types import utcnow


@dataclass(frozen=True)
class Taggable:
    name: str  # CloudStack's resourcetype, e.g. "Template"
    model: Any
    where: Callable[[], ColumnElement[bool]] | None = None  # e.g. ISOs among templates
    owned: bool = True  # rows have account_id/domain_id (tenancy applies)
    root_only: bool = False  # only a root admin may tag these


#: lower-cased resourcetype -> kind
TAGGABLE: dict[str, Taggable] = {}


def taggable(name: str, model: Any, **options: Any) -> Taggable:
    """Make a kind of object taggable (call once per kind, at import)."""
    kind = Taggable(name, model, **options)
    TAGGABLE[name.lower()] = kind
    return kind


taggable("Template", Template, where=lambda: Template.format != "ISO")
taggable("ISO", Template, where=lambda: Template.format == "ISO")
taggable("Zone", Zone, owned=False, root_only=True)


def _kind(resource_type: str) -> Taggable:
    kind = TAGGABLE.get(resource_type.lower())
    if kind is None:
        raise param_error(
            f"invalid value for resourcetype: {resource_type!r} cannot be tagged "
            f"(taggable: {', '.join(k.name for k in TAGGABLE.values())})"
        )
    return kind


def _live(kind: Taggable):
    query = select(kind.model).where(kind.model.live())
    return query.where(kind.where()) if kind.where else query


async def _resources(session, call, kind: Taggable, uuids: list[str]) -> list:
    """The objects named, each of which the caller may tag; else not found (or 531)."""
    query = _live(kind).where(kind.model.uuid.in_(uuids))
    if kind.owned:
        query = owned_by(query, kind.model, call.caller, with_projects=True)
    found = {row.uuid: row for row in (await session.scalars(query)).all()}
    for uuid in uuids:
        if uuid not in found:
            raise not_found(kind.name, uuid)
    if kind.root_only and not call.caller.is_root_admin:
        raise ApiError(531, f"only a root admin may change the tags of a {kind.name}")
    return [found[uuid] for uuid in dict.fromkeys(uuids)]


def _pairs(tags: list[dict] | None, *, need_value: bool) -> list[tuple[str, str | None]]:
    pairs = []
    for i, tag in enumerate(tags or []):
        key, value = (tag.get("key") or "").strip(), tag.get("value")
        if not key:
            raise param_error(f"tags[{i}].key is missing")
        if need_value and not value:
            raise param_error(f"tags[{i}].value is missing (tag {key})")
        if len(key) > 255 or len(value or "") > 255:
            raise param_error(f"tags[{i}]: key and value are at most 255 characters")
        pairs.append((key, value))
    return pairs


def tag_fields(
    tag: ResourceTag, kind_name: str, account: Account | None, domain: Domain | None
) -> dict:
    return {
        "key": tag.key,
        "value": tag.value,
        "resourcetype": kind_name,
        "resourceid": tag.resource_uuid,
        "account": account.name if account else None,
        "domain": domain.name if domain else None,
        "domainid": domain.uuid if domain else None,
    }


def _tag_query():
    return (
        select(ResourceTag, Account, Domain)
        .outerjoin(Account, Account.id == ResourceTag.account_id)
        .outerjoin(Domain, Domain.id == ResourceTag.domain_id)
        .where(ResourceTag.live())
    )


def tags_member(resource_type: str, object_id: ColumnElement[int]) -> JsonArray:
    """The ``tags`` member of a listing the database renders (see mgmt.db.jsonpage):
    the tags of the row whose id is ``object_id``, shaped as :func:`tag_fields`."""
    kind = TAGGABLE[resource_type.lower()]
    shape = JsonShape(
        JsonField("key", ResourceTag.key),
        JsonField("value", ResourceTag.value),
        JsonConst("resourcetype", kind.name),
        JsonField("resourceid", ResourceTag.resource_uuid),
        JsonField("account", Account.name, optional=True),  # outer joins: no owner
        JsonField("domain", Domain.name, optional=True),
        JsonField("domainid", Domain.uuid, optional=True),
    )
    query = _tag_query().where(
        ResourceTag.resource_type == kind.name, ResourceTag.resource_id == outer(object_id)
    )
    return JsonArray("tags", shape, query, (ResourceTag.id,))


async def tags_for(session, resource_type: str, ids: Iterable[int]) -> dict[int, list[dict]]:
    """The tags of the objects ``ids`` of a kind, by object id (for their listings)."""
    ids = list(set(ids))
    if not ids:
        return {}
    kind = TAGGABLE[resource_type.lower()]
    rows = (
        await session.execute(
            _tag_query()
            .where(ResourceTag.resource_type == kind.name, ResourceTag.resource_id.in_(ids))
            .order_by(ResourceTag.id)
        )
    ).all()
    found: dict[int, list[dict]] = {}
    for tag, account, domain in rows:
        found.setdefault(tag.resource_id, []).append(tag_fields(tag, kind.name, account, domain))
    return found


async def _check_create(call, args) -> dict:
    kind = _kind(args["resourcetype"])
    _pairs(args["tags"], need_value=True)
    async with call.server.db.sessions() as session:
        await _resources(session, call, kind, args["resourceids"])
    return {}


@command(
    "createTags",
    description="Tags objects: the same key/value pairs on each of resourceids",
    params=[
        Param("resourceids", "list", items="uuid", required=True, description="objects to tag"),
        Param("resourcetype", required=True, description="Template, ISO, Zone"),
        Param("tags", "map", required=True, description="tags[0].key=..&tags[0].value=.."),
        Param("customer", description="accepted for compatibility"),
    ],
    is_async=True,
    resumable=True,
    prepare=_check_create,
    since="4.0.0",
)
async def create_tags(call, args) -> PlainResult:
    kind = _kind(args["resourcetype"])
    pairs = _pairs(args["tags"], need_value=True)
    async with call.server.db.sessions() as session:
        resources = await _resources(session, call, kind, args["resourceids"])
        existing = {
            (t.resource_id, t.key): t
            for t in (
                await session.scalars(
                    select(ResourceTag).where(
                        ResourceTag.resource_type == kind.name,
                        ResourceTag.resource_id.in_([r.id for r in resources]),
                        ResourceTag.live(),
                    )
                )
            ).all()
        }
        for resource in resources:
            for key, value in pairs:
                old = existing.get((resource.id, key))
                if old is not None:
                    if old.value == value:
                        continue  # the same tag again (a resumed job): nothing to do
                    raise param_error(
                        f"{kind.name} {resource.uuid} has a tag {key} already "
                        f"(value {old.value!r}); delete it first"
                    )
                tag = ResourceTag(
                    key=key,
                    value=value,
                    resource_type=kind.name,
                    resource_id=resource.id,
                    resource_uuid=resource.uuid,
                    account_id=resource.account_id if kind.owned else None,
                    domain_id=resource.domain_id if kind.owned else None,
                )
                session.add(tag)
                existing[(resource.id, key)] = tag
        await session.commit()
    await call.server.events.record(
        call,
        "CREATE_TAGS",
        f"tagged {len(resources)} {kind.name}(s) with {', '.join(k for k, _ in pairs)}",
    )
    return PlainResult({"success": True})


async def _check_delete(call, args) -> dict:
    kind = _kind(args["resourcetype"])
    _pairs(args["tags"], need_value=False)
    async with call.server.db.sessions() as session:
        await _resources(session, call, kind, args["resourceids"])
    return {}


@command(
    "deleteTags",
    description="Removes tags from objects: those of tags (a key, or key and value), or all",
    params=[
        Param("resourceids", "list", items="uuid", required=True),
        Param("resourcetype", required=True, description="Template, ISO, Zone"),
        Param("tags", "map", description="tags[0].key=.. (and .value=..); default: all tags"),
    ],
    is_async=True,
    resumable=True,
    prepare=_check_delete,
    since="4.0.0",
)
async def delete_tags(call, args) -> PlainResult:
    kind = _kind(args["resourcetype"])
    pairs = _pairs(args["tags"], need_value=False)
    async with call.server.db.sessions() as session:
        resources = await _resources(session, call, kind, args["resourceids"])
        query = select(ResourceTag).where(
            ResourceTag.resource_type == kind.name,
            ResourceTag.resource_id.in_([r.id for r in resources]),
            ResourceTag.live(),
        )
        if pairs:
            query = query.where(
                or_(
                    *(
                        and_(
                            ResourceTag.key == key, ResourceTag.value == value if value else true()
                        )
                        for key, value in pairs
                    )
                )
            )
        now = utcnow()
        for tag in (await session.scalars(query)).all():
            tag.removed = now
        await session.commit()
    await call.server.events.record(
        call, "DELETE_TAGS", f"removed tags from {len(resources)} {kind.name}(s)"
    )
    return PlainResult({"success": True})


@command(
    "listTags",
    description="Lists the tags of the objects the caller may see",
    params=[
        *PAGING,
        Param("resourceid", description="the tagged object's id"),
        Param("resourcetype", description="Template, ISO, Zone"),
        Param("key"),
        Param("value"),
        Param("customer", description="accepted for compatibility"),
        Param("account", description="accepted for compatibility"),
        Param("domainid", "uuid", description="accepted for compatibility"),
        Param("listall", "boolean", description="accepted for compatibility"),
        Param("isrecursive", "boolean", description="accepted for compatibility"),
        Param("projectid", "uuid", description="accepted for compatibility"),
    ],
    list_key="tag",
    since="4.0.0",
)
async def list_tags(call, args) -> ListResult:
    kinds = [_kind(args["resourcetype"])] if args["resourcetype"] else list(TAGGABLE.values())
    visible = owned_by(
        select(ResourceTag.id), ResourceTag, call.caller, with_projects=True
    ).whereclause
    # Only the tags of live objects (a deleted object's tags go with it).
    alive = or_(
        *(
            and_(
                ResourceTag.resource_type == k.name,
                ResourceTag.resource_id.in_(_live(k).with_only_columns(k.model.id)),
            )
            for k in kinds
        )
    )
    query = _tag_query().where(alive)
    if visible is not None:
        query = query.where(or_(ResourceTag.account_id.is_(None), visible))
    if args["resourceid"]:
        query = query.where(ResourceTag.resource_uuid == args["resourceid"])
    if args["key"]:
        query = query.where(ResourceTag.key == args["key"])
    if args["value"]:
        query = query.where(ResourceTag.value == args["value"])
    if args["keyword"]:
        query = query.where(
            or_(
                ResourceTag.key.contains(args["keyword"], autoescape=True),
                ResourceTag.value.contains(args["keyword"], autoescape=True),
            )
        )
    async with call.server.db.sessions() as session:
        rows, total = await paged(session, query.order_by(ResourceTag.id), args, rows=True)
        return ListResult("tag", [tag_fields(t, t.resource_type, a, d) for t, a, d in rows], total)
