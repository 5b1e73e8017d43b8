"""Commands are declared once; the declaration drives everything else.

A declaration names the command, its parameters (type, required, length,
choices), whether it is asynchronous, the name of its response object, the
roles that may call it and the version it appeared in. From it come the
dispatcher's lookup, parameter conversion and its error messages, listApis,
and the generated API documentation.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mgmt.api.errors import param_error
from mgmt.api.params import Params

ADMIN, DOMAIN_ADMIN, USER = "Admin", "DomainAdmin", "User"
ALL_ROLES = frozenset({ADMIN, DOMAIN_ADMIN, USER})
ADMINS = frozenset({ADMIN, DOMAIN_ADMIN})
ROOT_ONLY = frozenset({ADMIN})

TYPES = ("uuid", "string", "integer", "long", "short", "boolean", "date", "list", "map")
_INT_RANGES = {
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"
    required: bool = False
    description: str = ""
    length: int = 255
    items: str | None = None  # element type of a list
    choices: tuple[str, ...] | None = None
    since: str | None = None
    related: str | None = None
    #: For a uuid: the kind of object it names ("user", "domain", "job", ...). The
    #: tenancy test checks every such parameter with another account's object.
    resource: str | None = None
    #: Values taken as they are besides the type's own (projectid=-1: every project).
    also: tuple[str, ...] = ()
    #: A secret (a password, a preshared key): never stored with the async job.
    secret: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type}")


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[..., Awaitable[Any]]
    description: str
    params: tuple[Param, ...] = ()
    is_async: bool = False
    response: str | None = None  # object name of a single result, e.g. "zone"
    list_key: str | None = None  # key of a list result, e.g. "zone"
    roles: frozenset[str] = ALL_ROLES
    since: str = "4.0.0"
    authenticated: bool = True
    related: tuple[str, ...] = ()
    response_fields: tuple[tuple[str, str, str], ...] = field(default=())  # name, type, text
    instance_type: str | None = None  # what an async job works on (jobinstancetype)
    resumable: bool = False  # an async job that may run again after a server restart
    #: CloudStack's BaseAsyncCreateCmd: the first answer carries the new object's id
    #: (chosen before the job runs; the handler creates the row with args["new_id"]).
    creates: bool = False
    #: For async commands: runs before the job is created, so that a bad or foreign id
    #: is refused at once, as CloudStack does. It may return fields for the first answer
    #: (the new object's "id") and the instance the job works on ("jobinstanceid").
    prepare: Callable[..., Awaitable[dict | None]] | None = None
    #: Fields of the ``response`` object that are secrets: the job's stored result
    #: keeps them sealed (mgmt.db.sealing); queryAsyncJobResult opens them.
    sealed_fields: tuple[str, ...] = ()

    def convert(self, params: Params) -> dict[str, Any]:
        """Every declared parameter, typed; raises 431 naming each bad one."""
        args: dict[str, Any] = {}
        problems: list[str] = []
        for p in self.params:
            if p.type == "map":
                value: Any = params.indexed(p.name) or None
                if value is None and p.required:
                    problems.append(f"missing parameter {p.name}")
                args[p.name] = value
                continue
            raw = params.get(p.name)
            if raw is None or raw == "":
                if p.required:
                    problems.append(f"missing parameter {p.name}")
                args[p.name] = None
                continue
            try:
                args[p.name] = convert_value(p, raw)
            except ValueError as exc:
                problems.append(f"invalid value for {p.name}: {exc}")
        if problems:
            raise param_error(
                f"Unable to execute API command {self.name.lower()}: " + "; ".join(problems)
            )
        return args


def convert_value(p: Param, raw: str) -> Any:
    if raw in p.also:
        return raw
    if p.type == "list":
        items = [item.strip() for item in raw.split(",") if item.strip()]
        element = Param(p.name, p.items or "string", length=p.length)
        return [convert_value(element, item) for item in items]
    if p.type == "uuid":
        try:
            return str(uuidlib.UUID(raw))
        except ValueError:
            raise ValueError(f"{raw[:60]!r} is not a UUID") from None
    if p.type in _INT_RANGES:
        try:
            number = int(raw)
        except ValueError:
            raise ValueError(f"{raw[:60]!r} is not a whole number") from None
        low, high = _INT_RANGES[p.type]
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}..{high}")
        return number
    if p.type == "boolean":
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ValueError(f"{raw[:60]!r} is not true or false")
    if p.type == "date":
        for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                return datetime.strptime(raw, fmt)
            except ValueError:
                continue
        raise ValueError(f"{raw[:60]!r} is not a date like 2026-11-21 or 2026-11-21 05:42:57")
    if p.choices is not None:
        match = {c.lower(): c for c in p.choices}.get(raw.lower())
        if match is None:
            raise ValueError(f"{raw[:60]!r} is not one of {', '.join(p.choices)}")
        return match
    if len(raw) > p.length:
        raise ValueError(f"longer than {p.length} characters")
    if any(ch in raw for ch in "\x00\r\n"):
        raise ValueError("control characters are not allowed")
    return raw


REGISTRY: dict[str, Command] = {}


def command(
    name: str,
    *,
    description: str,
    params: tuple[Param, ...] | list[Param] = (),
    is_async: bool = False,
    response: str | None = None,
    list_key: str | None = None,
    roles: frozenset[str] = ALL_ROLES,
    since: str = "4.0.0",
    authenticated: bool = True,
    related: tuple[str, ...] = (),
    response_fields: tuple[tuple[str, str, str], ...] = (),
    instance_type: str | None = None,
    resumable: bool = False,
    prepare: Callable[..., Awaitable[dict | None]] | None = None,
    creates: bool = False,
    sealed_fields: tuple[str, ...] = (),
):
    """Declare a command; the decorated coroutine handles it: ``handler(call, args)``."""

    def declare(handler):
        key = name.lower()
        if key in REGISTRY:
            raise ValueError(f"command {name} is declared twice")
        if resumable and any(p.secret for p in params):
            raise ValueError(f"command {name}: a resumable job needs its secret parameters")
        if sealed_fields and not (is_async and response):
            raise ValueError(f"command {name}: sealed_fields are for an async job's answer")
        REGISTRY[key] = Command(
            name=name,
            handler=handler,
            description=description,
            params=tuple(params),
            is_async=is_async,
            response=response,
            list_key=list_key,
            roles=roles,
            since=since,
            authenticated=authenticated,
            related=related,
            response_fields=response_fields,
            instance_type=instance_type,
            resumable=resumable,
            prepare=prepare,
            creates=creates,
            sealed_fields=sealed_fields,
        )
        return handler

    return declare


# Parameters many list commands share, declared once.
PAGING = (
    Param("page", "integer", description="page number, from 1"),
    Param("pagesize", "integer", description="entries per page"),
    Param("keyword", description="free-text filter"),
)
SCOPE = (
    Param("account", description="list resources of this account (with domainid)"),
    Param("domainid", "uuid", description="list resources of this domain", resource="domain"),
    Param("listall", "boolean", description="all resources the caller may see, not only its own"),
    Param("isrecursive", "boolean", description="include subdomains of domainid"),
    Param(
        "projectid",
        "uuid",
        description="list resources of this project; -1: of every project the caller uses",
        resource="project",
        also=("-1",),
    ),
)
