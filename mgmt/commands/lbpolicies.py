"""Stickiness and health-check policies of load balancer rules.

CloudStack's parameters are mapped to the router document's fields here (pure
functions, unit tested) and checked with the document's own models, so a
policy the router would refuse is refused by the API first, naming the
parameter. One policy of each kind per rule, as in CloudStack.

Stickiness parameters (``param[0].name=..&param[0].value=..``):

* ``LbCookie``: ``cookie-name`` (default SRVID); the rule must be protocol http.
* ``AppCookie``: ``cookie-name`` (required), ``length``, ``holdtime``; protocol http.
* ``SourceBased``: ``tablesize`` (``200k``: suffixes k, m, g are powers of 1024),
  ``expire`` (``30m``).

Times take a unit (ms, s, m, h, d); a bare number is milliseconds, HAProxy's
default unit, which CloudStack passes through. HAProxy options the router does
not offer (LbCookie's mode, nocache, indirect, postonly, domain; AppCookie's
request-learn, prefix, mode) are refused rather than ignored.

Health checks: without ``pingpath`` the router checks a TCP connect (CloudStack
would send ``GET /``, which fails for members that do not speak HTTP).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from appliances.router.sections.load_balancing import HealthCheck, Stickiness
from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import param_error
from mgmt.api.registry import PAGING, Param, command
from mgmt.commands.common import new_id, not_found
from mgmt.commands.loadbalancer import visible_rule
from mgmt.commands.ownership import owner_fields
from mgmt.db.models import Zone
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule, LbPolicy
from mgmt.db.tenancy import owned_by
from mgmt.orchestration import sync

METHODS = ("LbCookie", "AppCookie", "SourceBased")
#: CloudStack parameter -> document field, per method.
STICKINESS_PARAMS = {
    "LbCookie": {"cookie-name": "cookie_name"},
    "AppCookie": {"cookie-name": "cookie_name", "length": "length", "holdtime": "expire_s"},
    "SourceBased": {"tablesize": "table_size", "expire": "expire_s"},
}
_TIME = re.compile(r"^([0-9]{1,9})(ms|s|m|h|d)?$")
_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^([0-9]{1,9})([kmg])?$")
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
HEALTH_PARAMS = {
    "pingpath": "ping_path",
    "responsetimeout": "response_timeout_s",
    "intervaltime": "interval_s",
    "healthythreshold": "healthy_threshold",
    "unhealthythreshold": "unhealthy_threshold",
}


def seconds(name: str, value: str) -> int:
    m = _TIME.match(value.strip().lower())
    if not m:
        raise param_error(f"param {name}: {value[:40]!r} is not a time like 30m, 3h or 90s")
    return max(1, math.ceil(int(m.group(1)) * _TIME_UNITS[m.group(2) or "ms"]))


def size(name: str, value: str) -> int:
    m = _SIZE.match(value.strip().lower())
    if not m:
        raise param_error(f"param {name}: {value[:40]!r} is not a size like 200k")
    return int(m.group(1)) * _SIZE_UNITS.get(m.group(2) or "", 1)


def _errors(exc: ValidationError, names: dict[str, str]) -> str:
    """A pydantic error in the API's words (CloudStack parameter names)."""
    back = {field: param for param, field in names.items()}
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        for field, param in back.items():
            msg = msg.replace(field, param)
        parts.append(f"{back[loc]}: {msg}" if loc in back else msg)
    return "; ".join(parts)


def stickiness_fields(
    method: str, given: list[dict[str, str]] | None, lb_protocol: str
) -> dict[str, Any]:
    """The document's stickiness fields for CloudStack's method and param map."""
    known = STICKINESS_PARAMS[method]
    fields: dict[str, Any] = {}
    for n, entry in enumerate(given or []):
        name, value = (entry.get("name") or "").strip().lower(), entry.get("value")
        if not name or value is None:
            raise param_error(f"param[{n}] needs name and value")
        if name not in known:
            raise param_error(
                f"param {name!r} is not supported for {method} (supported: "
                f"{', '.join(known) or 'none'})"
            )
        field = known[name]
        if field == "expire_s":
            fields[field] = seconds(name, value)
        elif field == "table_size":
            fields[field] = size(name, value)
        elif field == "length":
            if not value.strip().isdigit():
                raise param_error(f"param length: {value[:40]!r} is not a whole number")
            fields[field] = int(value)
        else:
            fields[field] = value
    if method in ("LbCookie", "AppCookie") and lb_protocol != "http":
        raise param_error(
            f"{method} stickiness needs a rule of protocol http (cookies are "
            f"HTTP; this rule is {lb_protocol}): use SourceBased, or "
            "updateLoadBalancerRule protocol=http"
        )
    try:
        Stickiness(method=method, **fields)
    except ValidationError as exc:
        raise param_error(f"{method}: {_errors(exc, known)}") from None
    return fields


def stickiness_params(method: str, fields: dict[str, Any]) -> dict[str, str]:
    """CloudStack's param map back from the stored fields (for answers)."""
    out = {}
    for param, field in STICKINESS_PARAMS[method].items():
        if field in fields:
            value = fields[field]
            out[param] = f"{value}s" if field == "expire_s" else str(value)
    return out


def health_fields(args: dict[str, Any]) -> dict[str, Any]:
    fields = {
        field: args[param] for param, field in HEALTH_PARAMS.items() if args.get(param) is not None
    }
    try:
        HealthCheck(**fields)
    except ValidationError as exc:
        raise param_error(f"health check: {_errors(exc, HEALTH_PARAMS)}") from None
    return fields


async def _rule_answer(
    session, rule: FirewallRule, kind: str, policies: list[LbPolicy], key: str
) -> dict:
    network = await session.get_one(Network, rule.network_id)
    zone = await session.get(Zone, network.zone_id)
    items = [_policy_item(p) for p in policies]
    answer = {
        "lbruleid": rule.uuid,
        "state": rule.state,
        "zoneid": zone.uuid if zone else None,
        key: items,
        **await owner_fields(session, rule.account_id, rule.domain_id),
    }
    if kind == "Stickiness" and policies:
        answer["name"], answer["description"] = policies[0].name, policies[0].description
    return {k: v for k, v in answer.items() if v is not None}


def _policy_item(p: LbPolicy) -> dict:
    fields = json.loads(p.params or "{}")
    if p.kind == "Stickiness":
        item = {
            "id": p.uuid,
            "name": p.name,
            "methodname": p.method,
            "description": p.description,
            "state": p.state,
            "fordisplay": True,
            "params": stickiness_params(p.method or "SourceBased", fields),
        }
    else:
        check = HealthCheck(**fields)
        item = {
            "id": p.uuid,
            "pingpath": check.ping_path or "",
            "description": p.description,
            "state": p.state,
            "fordisplay": True,
            "responsetime": check.response_timeout_s,
            "healthcheckinterval": check.interval_s,
            "healthcheckthresshold": check.healthy_threshold,
            "unhealthcheckthresshold": check.unhealthy_threshold,
        }
    return {k: v for k, v in item.items() if v is not None}


KINDS = {
    "Stickiness": ("stickinesspolicies", "stickinesspolicy", "LB.STICKINESSPOLICY"),
    "HealthCheck": ("healthcheckpolicies", "healthcheckpolicy", "LB.HEALTHCHECKPOLICY"),
}


async def _answer(call, rule_id: int, kind: str, policy_ids: list[int] | None = None):
    name, key, _ = KINDS[kind]
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        query = select(LbPolicy).where(
            LbPolicy.rule_id == rule_id, LbPolicy.kind == kind, LbPolicy.live()
        )
        if policy_ids is not None:
            query = query.where(LbPolicy.id.in_(policy_ids or [-1]))
        policies = list((await session.scalars(query.order_by(LbPolicy.id))).all())
        return await _rule_answer(session, rule, kind, policies, key)


async def _check_lbrule(call, args) -> dict:
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["lbruleid"])
        return {"jobinstanceid": rule.uuid}


async def _create(call, args, kind: str, fields: dict, **row: Any) -> ObjectResult:
    """Insert the policy (one of each kind per rule) and apply it."""
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["lbruleid"])
        existing = await session.scalar(
            select(LbPolicy.uuid).where(
                LbPolicy.rule_id == rule.id,
                LbPolicy.kind == kind,
                LbPolicy.live(),
                LbPolicy.state != "Revoke",
            )
        )
        if existing:
            raise param_error(
                f"load balancer rule {rule.name} has a {kind} policy already "
                f"({existing}): delete it first"
            )
        policy = LbPolicy(
            **new_id(args),
            rule_id=rule.id,
            kind=kind,
            description=args["description"],
            params=json.dumps(fields),
            state="Add",
            **row,
        )
        session.add(policy)
        await session.commit()
        policy_id, rule_id, network_id = policy.id, rule.id, rule.network_id
    await sync.apply_change(call.server.orchestrator, network_id, [("policy", policy_id)])
    name, _, event = KINDS[kind]
    await call.server.events.record(
        call, f"{event}.CREATE", f"{kind} policy on load balancer {rule.name}", rule
    )
    return ObjectResult(name, await _answer(call, rule_id, kind, [policy_id]))


@command(
    "createLBStickinessPolicy",
    description="Makes a load balancer rule keep each client on one instance",
    params=[
        Param("lbruleid", "uuid", required=True, resource="loadbalancer"),
        Param("methodname", required=True, choices=METHODS),
        Param("name", required=True),
        Param("description", length=4096),
        Param("param", "map", description="param[0].name, param[0].value: see the method"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="stickinesspolicies",
    instance_type="LoadBalancerRule",
    prepare=_check_lbrule,
    since="3.0.0",
)
async def create_lb_stickiness_policy(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["lbruleid"])
    fields = stickiness_fields(args["methodname"], args["param"], rule.lb_protocol or "tcp")
    return await _create(
        call, args, "Stickiness", fields, name=args["name"], method=args["methodname"]
    )


@command(
    "createLBHealthCheckPolicy",
    description="Makes a load balancer rule check its instances (HTTP GET of pingpath, or "
    "a TCP connect without it)",
    params=[
        Param("lbruleid", "uuid", required=True, resource="loadbalancer"),
        Param("pingpath", description="an HTTP path (default: TCP connect check)"),
        Param("description", length=4096),
        Param("responsetimeout", "integer", description="seconds (default 2)"),
        Param("intervaltime", "integer", description="seconds between checks (default 5)"),
        Param("healthythreshold", "integer", description="passes to be up (default 2)"),
        Param("unhealthythreshold", "integer", description="failures to be down (default 10)"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="healthcheckpolicies",
    instance_type="LoadBalancerRule",
    prepare=_check_lbrule,
    since="4.2.0",
)
async def create_lb_health_check_policy(call, args) -> ObjectResult:
    return await _create(call, args, "HealthCheck", health_fields(args))


async def _visible_policy(session, call, uuid: str, kind: str) -> tuple[LbPolicy, FirewallRule]:
    row = (
        await session.execute(
            owned_by(
                select(LbPolicy, FirewallRule)
                .join(FirewallRule, FirewallRule.id == LbPolicy.rule_id)
                .where(
                    LbPolicy.uuid == uuid,
                    LbPolicy.kind == kind,
                    LbPolicy.live(),
                    FirewallRule.live(),
                ),
                FirewallRule,
                call.caller,
                with_projects=True,
            )
        )
    ).first()
    if row is None:
        raise not_found({"Stickiness": "stickiness policy"}.get(kind, "health check policy"), uuid)
    return row[0], row[1]


async def _delete(call, args, kind: str) -> PlainResult:
    async with call.server.db.sessions() as session:
        policy, rule = await _visible_policy(session, call, args["id"], kind)
        policy.state = "Revoke"
        policy_id, network_id = policy.id, rule.network_id
        await session.commit()
    await sync.apply_change(call.server.orchestrator, network_id, [("policy", policy_id)])
    await call.server.events.record(
        call,
        f"{KINDS[kind][2]}.DELETE",
        f"{kind} policy removed from load balancer {rule.name}",
        rule,
    )
    return PlainResult({"success": True})


def _check_policy(kind: str):
    async def check(call, args) -> dict:
        async with call.server.db.sessions() as session:
            _, rule = await _visible_policy(session, call, args["id"], kind)
            return {"jobinstanceid": rule.uuid}

    return check


@command(
    "deleteLBStickinessPolicy",
    description="Deletes a stickiness policy",
    params=[Param("id", "uuid", required=True, resource="lbstickinesspolicy")],
    is_async=True,
    instance_type="LoadBalancerRule",
    prepare=_check_policy("Stickiness"),
    since="3.0.0",
)
async def delete_lb_stickiness_policy(call, args) -> PlainResult:
    return await _delete(call, args, "Stickiness")


@command(
    "deleteLBHealthCheckPolicy",
    description="Deletes a health check policy",
    params=[Param("id", "uuid", required=True, resource="lbhealthcheckpolicy")],
    is_async=True,
    instance_type="LoadBalancerRule",
    prepare=_check_policy("HealthCheck"),
    since="4.2.0",
)
async def delete_lb_health_check_policy(call, args) -> PlainResult:
    return await _delete(call, args, "HealthCheck")


async def _list(call, args, kind: str) -> ListResult:
    name, _, _ = KINDS[kind]
    async with call.server.db.sessions() as session:
        if args["lbruleid"]:
            rule = await visible_rule(session, call, args["lbruleid"])
            policy_ids = None
        elif args["id"]:
            policy, rule = await _visible_policy(session, call, args["id"], kind)
            policy_ids = [policy.id]
        else:
            raise param_error("give lbruleid or id")
    answer = await _answer(call, rule.id, kind, policy_ids)
    return ListResult(name, [answer])


@command(
    "listLBStickinessPolicies",
    description="Lists the stickiness policy of a load balancer rule",
    params=[
        *PAGING,
        Param("lbruleid", "uuid", resource="loadbalancer"),
        Param("id", "uuid", resource="lbstickinesspolicy"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="stickinesspolicies",
    since="3.0.0",
)
async def list_lb_stickiness_policies(call, args) -> ListResult:
    return await _list(call, args, "Stickiness")


@command(
    "listLBHealthCheckPolicies",
    description="Lists the health check policy of a load balancer rule",
    params=[
        *PAGING,
        Param("lbruleid", "uuid", resource="loadbalancer"),
        Param("id", "uuid", resource="lbhealthcheckpolicy"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="healthcheckpolicies",
    since="4.2.0",
)
async def list_lb_health_check_policies(call, args) -> ListResult:
    return await _list(call, args, "HealthCheck")
