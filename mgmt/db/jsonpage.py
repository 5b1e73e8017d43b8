"""Long listings rendered to JSON by the database: one statement, one string back.

A 500-row page built in Python costs a row object, a dict and two date
conversions per row (about 10 ms a page); the database builds the same
objects in C in a fraction of that, and the answer embeds the text as it is
(:class:`~mgmt.api.envelope.RawJson`). One statement also carries the total
count, so a page is one round trip to the database thread or server.

Fields are declared with a kind, so each dialect renders them the way
CloudStack shows them: dates as ``2026-11-21T05:42:57+0000``, booleans as
JSON booleans (SQLite stores 0/1), JSON text embedded as JSON. Null fields
are dropped, as in every CloudStack answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

Kind = Literal["text", "int", "bool", "date", "json"]
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_name(name: str) -> None:
    if not NAME.fullmatch(name):  # names go into SQL text and JSON unescaped
        raise ValueError(f"not a field name: {name!r}")


@dataclass(frozen=True)
class JsonField:
    """One member of each listed object: its name, the SQL value and how to show it.

    ``json`` values are JSON text the server wrote itself (a job's result). A
    member whose column is NOT NULL is always there; any other is left out when
    NULL. Say ``optional=True`` for a NOT NULL column reached by an outer join.
    """

    name: str
    value: ColumnElement[Any]
    kind: Kind = "text"
    optional: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True)
class JsonConst:
    """A member with the same value in every object (``"dhcpprovider": "VirtualRouter"``)."""

    name: str
    value: str | int | bool | list | dict

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True)
class JsonArray:
    """A member listing related rows (an object's tags): ``query`` selects them with a
    WHERE that refers to the outer row; each becomes an object of ``shape``."""

    name: str
    shape: JsonShape
    query: Select[Any]
    order_by: tuple[ColumnElement[Any], ...]

    def __post_init__(self) -> None:
        _check_name(self.name)

    def sql(self, dialect: Dialect) -> ColumnElement[str]:
        """The array's text; '[]' when there are no rows.

        SQLAlchemy does not correlate a subquery in FROM, so SQLite (no ORDER BY
        inside aggregates before 3.44) cannot be given the order: it aggregates in
        the order it visits the rows (for an index on the outer row's id, by id).
        """
        obj = self.shape.sql(dialect)
        if dialect.name == "sqlite":
            aggregate = func.group_concat(obj, ",")
        else:
            aggregate = func.string_agg(
                obj, postgresql.aggregate_order_by(literal(","), *self.order_by)
            )
        text = self.query.with_only_columns(aggregate, maintain_column_froms=True)
        return literal("[", String).concat(func.coalesce(text.scalar_subquery(), "")).concat("]")


Member = JsonField | JsonConst | JsonArray


def outer(column: Any) -> ColumnElement[Any]:
    """The outer row's ``column`` inside a JsonArray's query, as SQL text: the shape
    is compiled on its own (JsonShape.sql), where SQLAlchemy would otherwise add
    the outer table to the subquery's FROM instead of correlating it."""
    column = getattr(column, "expression", column)
    return literal_column(f"{column.table.name}.{column.name}")


def _never_null(value: Any) -> bool:
    column = getattr(value, "expression", value)  # an ORM attribute's column
    return isinstance(column, Column) and not column.nullable


def _json_value(field: JsonField, dialect: Dialect) -> ColumnElement[Any]:
    """The field's value as JSON text (never NULL for a non-NULL value)."""
    value = field.value
    sqlite = dialect.name == "sqlite"
    if field.kind == "text":
        return func.json_quote(value) if sqlite else cast(func.to_json(cast(value, Text)), Text)
    if field.kind == "date":
        if sqlite:  # UTCDateTime stores "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) there
            return func.printf('"%sT%s+0000"', func.substr(value, 1, 10), func.substr(value, 12, 8))
        utc = func.to_char(func.timezone("UTC", value), literal('YYYY-MM-DD"T"HH24:MI:SS'))
        return literal('"', String).concat(utc).concat('+0000"')
    if field.kind == "bool":
        return case((value, "true"), else_="false")
    if field.kind == "json":  # validated on the way (a broken value fails the query)
        return func.json(value) if sqlite else cast(cast(value, postgresql.JSON), Text)
    return value if sqlite else cast(value, Text)  # int


def _object_text(members: tuple[Member, ...], dialect: Dialect) -> ColumnElement[str]:
    """One format() per row, the same on both databases.

    Neither json_object() (SQLite) nor json_build_object() (PostgreSQL 15) can
    leave a null member out; json_patch() and json_strip_nulls() can, but the
    first costs three times the object itself and the second also strips the
    nulls inside embedded JSON. So each nullable member is its own
    ``,"name":value`` piece, or '' when the value is NULL. Constants are part of
    the format string.
    """
    template, values = [], []
    for member in members:
        if isinstance(member, JsonConst):
            text = json.dumps(member.value, separators=(",", ":"))
            template.append(f',"{member.name}":' + text.replace("%", "%%"))
        elif isinstance(member, JsonArray):
            template.append(f',"{member.name}":%s')
            values.append(member.sql(dialect))
        elif not member.optional and _never_null(member.value):
            template.append(f',"{member.name}":%s')
            # NULL all the same (an outer join nobody marked): null, not broken JSON.
            values.append(func.coalesce(_json_value(member, dialect), "null"))
        else:
            template.append("%s")
            piece = literal(f',"{member.name}":', String).concat(_json_value(member, dialect))
            values.append(case((member.value.is_not(None), piece), else_=""))
    fmt = func.printf if dialect.name == "sqlite" else func.format
    text = fmt(literal("".join(template), String), *values)
    return literal("{", String).concat(func.substr(text, 2)).concat("}")


class JsonShape:
    """The objects of a listing: its fields, rendered to SQL once per dialect."""

    def __init__(self, *members: Member):
        self.members = members
        self._sql: dict[str, ColumnElement[str]] = {}

    def sql(self, dialect: Dialect) -> ColumnElement[str]:
        """One JSON object (as text) per row, null members dropped.

        Compiled once, to SQL text: SQLAlchemy would otherwise walk the whole
        expression for its cache key on every request (a third of a small
        listing's time). Every value in it is the shape's own (field names,
        constants), rendered as literals.
        """
        if dialect.name not in self._sql:
            expression = _object_text(self.members, dialect)
            text = expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            self._sql[dialect.name] = literal_column(f"({text})", String)
        return self._sql[dialect.name]


@dataclass(frozen=True)
class ListPage:
    """A page as the database rendered it: a JSON array's text and the total count."""

    items: str
    count: int


async def json_page(
    session: AsyncSession,
    query: Select[Any],
    shape: JsonShape,
    window: tuple[int, int] | None,
    *,
    order_by: list[ColumnElement[Any]],
) -> ListPage:
    """The page ``window`` (limit, offset; None for all rows) of ``query``, one statement.

    ``query`` is a select with its filters; its columns do not matter (the
    shape's fields replace them).
    """
    dialect = session.bind.dialect
    # SQLite (no ORDER BY inside aggregates before 3.44) aggregates an ordered
    # subquery in its order; PostgreSQL is told the order by a row number.
    columns = [shape.sql(dialect).label("obj")]
    if dialect.name != "sqlite":
        columns.append(func.row_number().over(order_by=order_by).label("ord"))
    rows = query.with_only_columns(*columns, maintain_column_froms=True).order_by(*order_by)
    if window is not None:
        # As literals: SQLite runs this statement twice as fast with LIMIT and OFFSET
        # known when it plans (it then skips the offset rows before rendering them).
        limit, offset = (int(n) for n in window)
        rows = rows.limit(literal_column(str(limit))).offset(literal_column(str(offset)))
    listed = rows.subquery()
    if dialect.name == "sqlite":
        array = func.group_concat(listed.c.obj, ",")
    else:
        array = func.string_agg(
            listed.c.obj, postgresql.aggregate_order_by(literal(","), listed.c.ord)
        )
    total = select(func.count()).select_from(query.subquery())
    statement = select(total.scalar_subquery(), select(array).select_from(listed).scalar_subquery())
    connection = await session.connection()  # Core: none of the ORM's per-statement work
    count, text = (await connection.execute(statement)).one()
    return ListPage(f"[{text or ''}]", int(count or 0))


async def json_one(session: AsyncSession, query: Select[Any], shape: JsonShape) -> str | None:
    """The first row of ``query`` as ``shape``'s JSON object (None: no row), so an
    object's create/update answer and its listing come from one definition."""
    dialect = session.bind.dialect
    statement = query.with_only_columns(shape.sql(dialect), maintain_column_froms=True).limit(1)
    return await session.scalar(statement)
