"""Helpers every command module uses: dates, paging, lookups that respect tenancy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.api.errors import param_error

DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
MAX_PAGE_SIZE = 10_000


def date(value: datetime | None) -> str | None:
    return value.strftime(DATE_FORMAT) if value else None


async def paged(session: AsyncSession, query, args: dict[str, Any]) -> tuple[list, int]:
    """(rows of the requested page, total count) of a select.

    Without paging the count is the number of rows: one query, not two."""
    page, size = args.get("page"), args.get("pagesize")
    if size is None and page is None:
        rows = list((await session.execute(query)).scalars().all())
        return rows, len(rows)
    size = min(size or 500, MAX_PAGE_SIZE)
    if size <= 0 or (page is not None and page <= 0):
        raise param_error("page and pagesize must be positive")
    rows = list((await session.execute(
        query.limit(size).offset(((page or 1) - 1) * size))).scalars().all())
    if (page or 1) == 1 and len(rows) < size:
        return rows, len(rows)  # the first page holds everything
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar()
    return rows, int(total or 0)


def not_found(what: str, uuid: str) -> Exception:
    """The same answer for a missing id and one the caller may not see."""
    return param_error(f"Unable to find {what} with id {uuid}")
