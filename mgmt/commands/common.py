"""Helpers every command module uses: dates, paging, lookups that respect tenancy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.api.errors import param_error
from mgmt.db.jsonpage import JsonShape, ListPage, json_page
from mgmt.db.tenancy import owned_by

DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
MAX_PAGE_SIZE = 10_000


def date(value: datetime | None) -> str | None:
    """CloudStack's date format, 2026-11-21T05:42:57+0000 (values are UTC)."""
    if value is None:
        return None
    if value.tzinfo is not UTC and value.utcoffset():  # the column type always gives UTC
        return value.strftime(DATE_FORMAT)
    # strftime costs a few microseconds; a 500-row listing formats a thousand dates.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}+0000"
    )


def page_window(args: dict[str, Any]) -> tuple[int, int] | None:
    """(limit, offset) of the requested page; None when the caller did not page."""
    page, size = args.get("page"), args.get("pagesize")
    if size is None and page is None:
        return None
    size = min(size or 500, MAX_PAGE_SIZE)
    if size <= 0 or (page is not None and page <= 0):
        raise param_error("page and pagesize must be positive")
    return size, ((page or 1) - 1) * size


async def paged(
    session: AsyncSession, query, args: dict[str, Any], *, rows: bool = False
) -> tuple[list, int]:
    """(objects of the requested page, total count) of a select; with ``rows``, plain
    rows (of a column select, or of several entities).

    Without paging the count is the number of rows: one query, not two."""

    async def fetch(q) -> list:
        result = await session.execute(q)
        return list(result.all() if rows else result.scalars().all())

    window = page_window(args)
    if window is None:
        found = await fetch(query)
        return found, len(found)
    size, offset = window
    found = await fetch(query.limit(size).offset(offset))
    if offset == 0 and len(found) < size:
        return found, len(found)  # the first page holds everything
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar()
    return found, int(total or 0)


async def json_paged(
    session: AsyncSession, query, shape: JsonShape, args: dict[str, Any], *, order_by
) -> ListPage:
    """A long listing's page rendered to JSON by the database (see mgmt.db.jsonpage)."""
    return await json_page(session, query, shape, page_window(args), order_by=order_by)


def new_id(args: dict[str, Any]) -> dict[str, str]:
    """``uuid=`` for the row an async create command makes: the id its first answer
    gave (Command.creates), or a fresh one when called some other way."""
    return {"uuid": args["new_id"]} if args.get("new_id") else {}


async def rows_by_id(session: AsyncSession, model, ids) -> dict[int, Any]:
    """{id: row} of ``model`` for the given ids (None ids ignored), in one query."""
    keys = {k for k in ids if k is not None}
    if not keys:
        return {}
    rows = await session.scalars(select(model).where(model.id.in_(keys)))
    return {row.id: row for row in rows.all()}


def of_uuid(column, model, uuid: str):
    """``column`` refers to the ``model`` row whose public id is ``uuid``."""
    return column.in_(select(model.id).where(model.uuid == uuid))


def apply_given(obj, args: dict[str, Any], fields) -> None:
    """Set each attribute whose parameter was given: ``fields`` pairs (param, attr)."""
    for param, attr in fields.items() if isinstance(fields, dict) else fields:
        if args[param] is not None:
            setattr(obj, attr, args[param])


def not_found(what: str, uuid: str) -> Exception:
    """The same answer for a missing id and one the caller may not see."""
    return param_error(f"Unable to find {what} with id {uuid}")


async def visible_row(session: AsyncSession, call, model, uuid: str, what: str):
    """The live ``model`` row ``uuid`` if the caller (or its projects) owns it; ``what``
    names it in the not-found answer."""
    row = await session.scalar(
        owned_by(
            select(model).where(model.uuid == uuid, model.live()),
            model,
            call.caller,
            with_projects=True,
        )
    )
    if row is None:
        raise not_found(what, uuid)
    return row


def check_visible(model, what: str):
    """An async command's ``prepare`` for a command on the row named by ``id``: a
    missing or foreign id is refused at once, and the job works on that row."""

    async def check(call, args) -> dict:
        async with call.server.db.sessions() as session:
            row = await visible_row(session, call, model, args["id"], what)
            return {"jobinstanceid": row.uuid}

    return check
