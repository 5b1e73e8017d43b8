"""Site-to-site connection states as the routers see them.

The database says what a connection should be; whether its tunnel is up only
the router knows: its agent's live status lists each strongSwan connection
as Connected, Disconnected or Error (with the reason). ``refresh`` asks the
routers of some networks and records that state on the connections that are
applied (not those still being added, removed or reset), so listVpnConnections
answers CloudStack's Connected / Disconnected / Error truthfully. A router that
does not answer leaves the recorded state as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select

from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.rules import VpnConnection
from mgmt.orchestration import sync

log = logging.getLogger("skiff.orchestration")

STATUS_TIMEOUT = 5.0
#: States a connection is in once applied; the router's view replaces them.
SETTLED = ("Connected", "Disconnected", "Error")
#: Of two routers (a redundant pair), the better view wins: the primary runs the VPN.
RANK = {"Connected": 3, "Error": 2, "Disconnected": 1}


def doc_id(conn_id: int) -> str:
    """The connection's id in the router document (mgmt.orchestration.documents)."""
    return f"s2s-{conn_id}"


def strongswan_name(conn_id: int) -> str:
    """The router names its strongSwan connection after the document id
    (appliances.router.vpn_config.conn_name)."""
    return f"s2s-{doc_id(conn_id)}"


def states_from(status: dict) -> dict[int, tuple[str, str | None]]:
    """Connection id -> (state, reason) from an agent's /v1/status body."""
    vpn = (status.get("services") or {}).get("vpn") or {}
    out: dict[int, tuple[str, str | None]] = {}
    for name, info in (vpn.get("connections") or {}).items():
        prefix = strongswan_name(0)[:-1]
        if not name.startswith(prefix) or not name[len(prefix) :].isdigit():
            continue
        state = str(info.get("state") or "Disconnected")
        if state not in RANK:
            state = "Disconnected"
        out[int(name[len(prefix) :])] = (state, info.get("reason"))
    return out


async def router_status(orch, router_id: int) -> dict | None:
    """The agent's live /v1/status body, or None if the router did not answer."""
    async with orch.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        host = await session.get(Host, vm.host_id) if vm.host_id else None
    if host is None or vm.state != "Running":
        return None
    try:
        client = await orch.agent(host, vm, router, timeout=STATUS_TIMEOUT)
        reply = await client.status(timeout=STATUS_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means: no view from this router
        log.info("VPN state of router %s: %s", vm.name, exc)
        return None
    return reply.body if reply.ok and isinstance(reply.body, dict) else None


async def live_states(orch, network_id: int) -> dict[int, tuple[str, str | None]]:
    """What the network's routers say of its connections (empty if none answered)."""
    best: dict[int, tuple[str, str | None]] = {}
    for router_id in await sync.network_routers(orch, network_id):
        status = await router_status(orch, router_id)
        if status is None:
            continue
        for conn_id, seen in states_from(status).items():
            if conn_id not in best or RANK[seen[0]] > RANK[best[conn_id][0]]:
                best[conn_id] = seen
    return best


async def refresh(orch, network_ids: Iterable[int]) -> None:
    """Record the routers' view on the applied connections of these networks."""
    for network_id in sorted(set(network_ids)):
        seen = await live_states(orch, network_id)
        if not seen:
            continue
        async with orch.db.sessions() as session:
            rows = (
                await session.scalars(
                    select(VpnConnection).where(
                        VpnConnection.id.in_(list(seen)),
                        VpnConnection.live(),
                        VpnConnection.state.in_(SETTLED),
                    )
                )
            ).all()
            for conn in rows:
                conn.state = seen[conn.id][0]
            await session.commit()
