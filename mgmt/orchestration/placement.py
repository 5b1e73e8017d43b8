"""Names, MACs and addresses the orchestrator hands out.

Every choice is checked by a unique index (``nics``: live MAC, live network +
address), so two jobs that pick the same value concurrently cannot both keep
it: the loser's flush fails and it picks again (``retrying``).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.networks import Network
from mgmt.db.models.systemvms import SystemVm, VmConsole

T = TypeVar("T")
ATTEMPTS = 8


def new_mac(prefix: str = "02:00") -> str:
    """A locally administered unicast MAC (CloudStack's guest NICs start with 02:00)."""
    return prefix + "".join(f":{b:02x}" for b in secrets.token_bytes(4))


def vni_of(network: Network) -> int:
    """The network's VXLAN id: 1000 + its id (unique, no allocation to race on)."""
    return 1000 + network.id


async def retrying(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Run attempt (which opens its own session) again when a unique index refused it."""
    for _ in range(ATTEMPTS - 1):
        try:
            return await attempt()
        except IntegrityError:
            continue
    try:
        return await attempt()
    except IntegrityError as exc:
        raise RuntimeError(f"could not choose a free {what} after {ATTEMPTS} attempts") from exc


async def free_guest_ip(session, network: Network, wanted: str | None = None) -> str:
    """``wanted`` if it is free and in the network's range, else the lowest free address."""
    cidr = ipaddress.IPv4Network(network.cidr)
    used = set((await session.scalars(select(Nic.ip_address).where(
        Nic.network_id == network.id, Nic.live()))).all())
    used.add(network.gateway)
    first = ipaddress.IPv4Address(network.start_ip) if network.start_ip else cidr[2]
    last = ipaddress.IPv4Address(network.end_ip) if network.end_ip else cidr[-2]
    if wanted is not None:
        addr = ipaddress.IPv4Address(wanted)
        if not first <= addr <= last:
            raise ValueError(f"ipaddress {wanted} is outside the network's range {first}-{last}")
        if wanted in used:
            raise ValueError(f"ipaddress {wanted} is in use in network {network.name}")
        return wanted
    for value in range(int(first), int(last) + 1):
        text = str(ipaddress.IPv4Address(value))
        if text not in used:
            return text
    raise LookupError(f"network {network.name} has no free address left in {first}-{last}")


async def free_control_ip(session, host_id: int, network: ipaddress.IPv4Network) -> str:
    """The lowest control address on the host no live router or system VM uses (the
    host has .1)."""
    used = set((await session.scalars(
        select(Router.control_ip).join(VmInstance, VmInstance.id == Router.vm_id)
        .where(VmInstance.host_id == host_id, Router.live(), VmInstance.live()))).all())
    used |= set((await session.scalars(
        select(SystemVm.control_ip).join(VmInstance, VmInstance.id == SystemVm.vm_id)
        .where(VmInstance.host_id == host_id, SystemVm.live(), VmInstance.live()))).all())
    for addr in list(network.hosts())[1:]:
        if str(addr) not in used:
            return str(addr)
    raise LookupError(f"the host's control network {network} is full")


#: VNC displays of instances listen on the host's control address at 5900 + n.
VNC_BASE_PORT = 5900
VNC_DISPLAYS = 1000


async def free_vnc_port(session, host_id: int) -> int:
    """The lowest VNC port on the host no instance's display holds (a unique index on
    the live displays refuses a port two starts picked at once)."""
    used = set((await session.scalars(select(VmConsole.port).where(
        VmConsole.host_id == host_id, VmConsole.live()))).all())
    for port in range(VNC_BASE_PORT, VNC_BASE_PORT + VNC_DISPLAYS):
        if port not in used:
            return port
    raise LookupError(f"the host has no free VNC port left ({VNC_DISPLAYS} displays)")
