"""A redundant router pair in the lab: "router" and "rb" (``running_lab(redundant=True)``).

Both routers get the lab's baseline document (each with its own MACs and control
address) plus their own redundancy section: VRRP and conntrackd over the guest
segment, own addresses 10.1.1.2 / 10.1.1.3 and 203.0.113.31 / .32; the guest
gateway 10.1.1.1 and the public addresses 203.0.113.10-.12 are shared.
"""

from __future__ import annotations

import asyncio
from typing import Any

from appliances.lab.lab import Lab, LabError
from appliances.router.document import RouterDocument
from appliances.router.verify import parse_document

PAIR = ("router", "rb")
VRID = 17
PASSWORD = "lab-vrrp"
OWN = {
    "router": {"guest": "10.1.1.2/24", "public": "203.0.113.31/24", "priority": 150},
    "rb": {"guest": "10.1.1.3/24", "public": "203.0.113.32/24", "priority": 100},
}


def peer_of(router: str) -> str:
    return PAIR[1] if router == PAIR[0] else PAIR[0]


def pair_document(
    lab: Lab, router: str, *, advert_interval_s: int = 1, **changes: Any
) -> RouterDocument:
    """``router``'s document of the pair, one generation above what it has applied."""
    applied = lab.documents.get(router)
    data = lab.baseline(router).model_dump(mode="json")
    data["generation"] = applied.generation + 1 if applied else 1
    own, peer = OWN[router], OWN[peer_of(router)]
    data["redundancy"] = {
        "vrid": VRID,
        "priority": own["priority"],
        "advert_interval_s": advert_interval_s,
        "password": PASSWORD,
        "sync_interface": "eth0",
        "peer_ip": peer["guest"].split("/")[0],
        "own_addresses": [
            {"interface": "eth0", "address": own["guest"]},
            {"interface": "eth2", "address": own["public"]},
        ],
    }
    data.update(changes)
    return parse_document(data)


async def apply_pair(lab: Lab, **kwargs: Any) -> None:
    """Apply both routers' pair documents (router first: it wins the first election)."""
    for router in PAIR:
        await lab.apply(pair_document(lab, router, **kwargs), router)


async def redundancy_status(lab: Lab, router: str) -> dict:
    """services.redundancy of the router's /v1/status."""
    reply = await lab.agent(router, timeout=10).request("GET", "/v1/status")
    if not reply.ok:
        raise LabError(f"{router} status: HTTP {reply.status}: {reply.body}")
    return reply.body["services"]["redundancy"]


async def service_status(lab: Lab, router: str, service: str) -> dict:
    reply = await lab.agent(router, timeout=10).request("GET", "/v1/status")
    return reply.body["services"][service]


async def wait_state(lab: Lab, router: str, state: str, timeout: float = 30.0) -> dict:
    """Poll until the router's VRRP state is ``state``; returns its redundancy status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict = {}
    while loop.time() < deadline:
        try:
            last = await redundancy_status(lab, router)
            if last["vrrp"]["state"] == state:
                return last
        except (OSError, LabError, TimeoutError) as exc:
            last = {"error": str(exc)}
        await asyncio.sleep(0.25)
    raise LabError(f"{router} did not become {state} within {timeout:.0f} s: {last}")


async def take_down(lab: Lab, router: str) -> None:
    """Pull a router's guest and public cables (its namespace and agent stay): a router
    that dies without saying goodbye."""
    await _links(lab, router, "down")


async def bring_up(lab: Lab, router: str) -> None:
    await _links(lab, router, "up")


async def _links(lab: Lab, router: str, state: str) -> None:
    for ifname in ("eth0", "eth2"):
        await lab.run_in(router, ["ip", "link", "set", ifname, state], check=True)


async def shut_down(lab: Lab, router: str) -> None:
    """What a router's shutdown does: its agent stops (keepalived releases the shared
    addresses and tells the peer with a priority-0 advert), then the machine is gone.
    Stopping the agent alone would leave a kernel that still forwards and NATs."""
    await lab.stop_agent(router)
    await take_down(lab, router)
