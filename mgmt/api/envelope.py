"""Response bodies: CloudStack's JSON and XML envelopes.

One top-level key, ``<command lower-cased>response``. A list answers
``{"count": N, "<key>": [...]}`` with N the total across pages, and an empty
list answers ``{}`` with no count (libcloud and CloudStackAIO depend on it).
JSON omits null fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import orjson

from mgmt.api.errors import ApiError

JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "text/xml;charset=UTF-8"
VERSION = "4.19.0.0-skiff"


class RawJson(str):
    """JSON text stored as such (a job's result): embedded in a JSON answer as it is,
    without decoding and encoding it again; parsed for an XML answer."""


def _encode_default(value: Any) -> Any:
    if isinstance(value, RawJson):
        return orjson.Fragment(value.encode())
    for base in (str, int, float, dict, list):  # other subclasses (enums): as their base
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


@dataclass
class ObjectResult:
    """A single object under its name, e.g. {"zone": {...}}."""

    name: str
    value: dict


@dataclass
class ListResult:
    key: str
    #: The objects, or a JSON array's text the database rendered (mgmt.db.jsonpage).
    items: list[dict] | RawJson
    count: int | None = None  # total across pages; defaults to len(items)


@dataclass
class PlainResult:
    """Fields directly under the response key (login, async job answers)."""

    fields: dict = field(default_factory=dict)


Result = ObjectResult | ListResult | PlainResult


def body_of(result: Result) -> dict:
    if isinstance(result, ObjectResult):
        return {result.name: _clean(result.value)}
    if isinstance(result, ListResult):
        if not result.items or result.items == "[]":
            return {}
        count = len(result.items) if result.count is None else result.count
        if isinstance(result.items, RawJson):
            return {"count": count, result.key: result.items}
        return {"count": count, result.key: [_clean(item) for item in result.items]}
    return _clean(result.fields)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def render(command: str, body: dict, fmt: str) -> tuple[bytes, str]:
    key = f"{command.lower()}response"
    if fmt == "json":
        return orjson.dumps(
            {key: body}, default=_encode_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS
        ), JSON_TYPE
    return _xml(key, body), XML_TYPE


def error_body(command: str, error: ApiError) -> dict:
    return {
        "uuidList": [],
        "errorcode": error.code,
        "cserrorcode": error.cserrorcode,
        "errortext": error.text,
    }


def _xml(key: str, body: dict) -> bytes:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f'<{key} cloud-stack-version="{VERSION}">']
    _xml_fields(body, parts)
    parts.append(f"</{key}>")
    return "".join(parts).encode()


def _xml_fields(body: dict, parts: list[str]) -> None:
    for name, value in body.items():
        if isinstance(value, RawJson):
            value = orjson.loads(value.encode())
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                parts.append(f"<{name}>")
                _xml_fields(item, parts)
                parts.append(f"</{name}>")
            elif item is not None:
                text = str(item).lower() if isinstance(item, bool) else str(item)
                parts.append(f"<{name}>{escape(text)}</{name}>")
