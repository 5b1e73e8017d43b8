"""Bringing routers to the database's state: build, push, record, settle.

``converge`` pushes one router's whole document under the router's lock and
records what the agent confirmed (generation and document hash). A document
whose hash the router has applied already is not sent again, so concurrent
jobs coalesce: the first to take the lock pushes every pending change, the
others find theirs applied and return at once.

``apply_change`` is what a rule job calls. It first pushes everything pending;
if the router refuses that, it pushes only the job's own items, so one bad
rule cannot fail its neighbours' jobs; if the router refuses those too, the
job's items are discarded (an ``Add`` is removed, a ``Revoke`` is active
again) and the job fails with the router's own words.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import select, update

from mgmt.api.errors import ApiError
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.rules import (
    FirewallRule,
    LbMember,
    LbPolicy,
    RemoteAccessVpn,
    VpnConnection,
    VpnUser,
)
from mgmt.db.types import utcnow
from mgmt.orchestration import documents
from mgmt.orchestration.documents import Include, Key
from mgmt.orchestration.hosts.driver import HostError

log = logging.getLogger("skiff.orchestration")

#: Item kind -> (table, state when applied). A revoked item's row is removed. A VPN
#: connection is Disconnected until its router says the tunnel is up
#: (mgmt.orchestration.vpnstate).
TABLES: dict[str, tuple[Any, str]] = {
    "rule": (FirewallRule, "Active"),
    "member": (LbMember, "Active"),
    "policy": (LbPolicy, "Active"),
    "vpnuser": (VpnUser, "Active"),
    "ravpn": (RemoteAccessVpn, "Running"),
    "s2s": (VpnConnection, "Disconnected"),
}
ROUTER_ERROR = 530


class RouterRefused(Exception):
    """The agent answered and refused the document; the text is its error."""


class RouterUnreachable(Exception):
    """The router did not answer (not running, no route, TLS failure, timeout)."""


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        errors = body.get("errors") or body.get("error") or body
        return json.dumps(errors)[:2000] if not isinstance(errors, str) else errors[:2000]
    return str(body)[:2000]


async def converge(orch, router_id: int, include: Include = None, *, force: bool = False) -> int:
    """Push router_id's document; returns the generation it runs. Raises RouterRefused or
    RouterUnreachable; settles the pending items the pushed document carried."""
    async with orch.locks.hold(router_id):
        async with orch.db.sessions() as session:
            inputs = await documents.load(
                session, router_id, orch.sealer, orch.ca.derive_secret if orch.ca else None)
            router, vm = inputs.router, inputs.vm
            if vm.state != "Running" or vm.host_id is None:
                raise RouterUnreachable(f"router {vm.name} is {vm.state}")
            host = await session.get_one(Host, vm.host_id)
            data = documents.build(inputs, include)
            pending = dict(inputs.pending)
            doc_hash = orch.fingerprints.document(data)
            if doc_hash == router.doc_hash and router.applied_hash and not force:
                await _settle(orch, pending)
                return router.applied_generation
            generation = max(router.generation, router.applied_generation) + 1
            data["generation"] = generation
            body = orjson.dumps(data)
        try:
            client = await orch.agent(host, vm, router)
            reply = await client.put_body(body)
        except (HostError, OSError, TimeoutError) as exc:
            await _record(orch, router_id, generation, error=f"{type(exc).__name__}: {exc}")
            raise RouterUnreachable(f"router {vm.name} did not answer: {exc}") from exc
        except Exception as exc:  # aiohttp's errors
            await _record(orch, router_id, generation, error=f"{type(exc).__name__}: {exc}")
            raise RouterUnreachable(f"router {vm.name} did not answer: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if not reply.ok:
            text = _error_text(reply.body)
            await _record(orch, router_id, generation, error=text)
            raise RouterRefused(f"router {vm.name} refused the change: {text}")
        await _record(orch, router_id, generation, doc_hash=doc_hash,
                      body_hash=orch.fingerprints.sent(body))
        await _settle(orch, pending)
        return generation


async def _record(orch, router_id: int, generation: int, *, doc_hash: str | None = None,
                  body_hash: str | None = None, error: str | None = None) -> None:
    """``doc_hash``: the content (without generation), to skip a push that changes
    nothing; ``body_hash``: what the agent reports back once it applied the bytes sent
(both keyed: mgmt.orchestration.fingerprints)."""
    values: dict[str, Any] = {"generation": generation}
    if doc_hash is not None:
        values.update(applied_generation=generation, applied_hash=body_hash,
                      doc_hash=doc_hash, last_seen=utcnow(), last_error=None)
    else:
        values["last_error"] = error
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id == router_id).values(**values))


async def _settle(orch, pending: dict[Key, str]) -> None:
    """Mark what the router now runs: pending adds active, pending revokes removed."""
    if not pending:
        return
    now = utcnow()
    async with orch.db.sessions() as session, session.begin():
        for (kind, row_id), state in pending.items():
            table, done = TABLES[kind]
            if state == "Revoke":
                await session.execute(update(table).where(table.id == row_id,
                                                          table.state == "Revoke")
                                      .values(removed=now))
            else:
                await session.execute(update(table).where(table.id == row_id,
                                                          table.state == state)
                                      .values(state=done))


async def _discard(orch, keys: Iterable[Key]) -> None:
    """Undo a refused change: its adds are removed, its revokes active again."""
    now = utcnow()
    async with orch.db.sessions() as session, session.begin():
        for kind, row_id in keys:
            table, done = TABLES[kind]
            row = await session.get(table, row_id)
            if row is None or row.removed is not None:
                continue
            if row.state == "Revoke":
                row.state = done
            elif row.state in ("Add", "Added", "Pending"):
                row.removed = now


async def network_routers(orch, network_id: int) -> list[int]:
    """Ids of the network's routers that should run its document."""
    async with orch.db.sessions() as session:
        rows = await session.scalars(
            select(Router.id).join(VmInstance, VmInstance.id == Router.vm_id)
            .where(Router.network_id == network_id, Router.live(), VmInstance.live(),
                   VmInstance.state.in_(("Running", "Starting"))).order_by(Router.id))
        return list(rows.all())


async def apply_network(orch, network_id: int, include: Include = None) -> None:
    """Push to each of the network's routers. A refusal fails at once (both routers of a
    pair get the same rules); a router that does not answer fails the change only when
    no router took it: the reconcile loop brings a silent one back with the whole
    document."""
    routers = await network_routers(orch, network_id)
    silent: list[RouterUnreachable] = []
    for router_id in routers:
        try:
            await converge(orch, router_id, include)
        except RouterUnreachable as exc:
            silent.append(exc)
    if silent and len(silent) == len(routers):
        raise silent[0]
    for exc in silent:
        log.warning("network %s: %s; the reconcile loop will bring it back", network_id, exc)


async def apply_change(orch, network_id: int, keys: Iterable[Key]) -> None:
    """Apply one job's items to the network's routers (see the module docstring); with no
    router running, the items are simply settled: the next router gets them whole."""
    mine = set(keys)
    routers = await network_routers(orch, network_id)
    if not routers:
        await _settle(orch, await _states(orch, mine))
        return
    try:
        await apply_network(orch, network_id)
        return
    except RouterRefused:
        pass
    except RouterUnreachable as exc:
        await _discard(orch, mine)
        raise ApiError(ROUTER_ERROR, str(exc)) from exc
    try:
        await apply_network(orch, network_id, include=lambda key: key in mine)
    except (RouterRefused, RouterUnreachable) as exc:
        await _discard(orch, mine)
        raise ApiError(ROUTER_ERROR, str(exc)) from exc


async def _states(orch, keys: set[Key]) -> dict[Key, str]:
    out: dict[Key, str] = {}
    async with orch.db.sessions() as session:
        for kind, row_id in keys:
            table, _ = TABLES[kind]
            row = await session.get(table, row_id)
            if row is not None and row.removed is None:
                out[(kind, row_id)] = row.state
    return out
