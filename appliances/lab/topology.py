"""Wiring of the lab's namespaces: the switch, the internet, the router and the guests.

The two segments (guest, public) are bridges inside the ``switch`` namespace, so no lab
traffic is bridged in the host's root namespace (host firewalls and br_netfilter never
see it). The one thing in the root namespace is the control bridge the host uses to
reach the router, as a CloudStack host reaches its virtual routers over link-local.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from appliances.lab import names, netns
from appliances.lab.names import Guest, LabNames

GUEST_BRIDGE = "guest"
PUBLIC_BRIDGE = "public"
ALLOC_LOCK = Path("/run/lock/skiff-lab.lock")


async def build_switch(n: LabNames, networks: int = 1) -> None:
    """The switch: bridge "public" plus one guest bridge per network (guest, guest2)."""
    await netns.add_namespace(n.switch)
    for k in range(1, networks + 1):
        await netns.add_bridge(names.NETWORKS[k].bridge, n.switch)
    await netns.add_bridge(PUBLIC_BRIDGE, n.switch)


async def plug(n: LabNames, port: str, bridge: str, ns: str, ifname: str, mac: str) -> None:
    """Connect ns's ifname to a switch bridge through a veth whose switch end is ``port``."""
    await netns.add_veth(port, n.switch, ifname, ns, peer_mac=mac)
    await netns.set_master(port, bridge, n.switch)
    await netns.set_up(port, n.switch)
    await netns.set_up(ifname, ns)


async def build_internet(n: LabNames) -> None:
    """The lab's Internet: 203.0.113.1 on the public segment plus the remote-client /32s."""
    ns = n.internet
    await netns.add_namespace(ns)
    await plug(n, "internet", PUBLIC_BRIDGE, ns, "eth0", names.INTERNET_MAC)
    await netns.add_address("eth0", f"{names.INTERNET_IP}/{names.PUBLIC_CIDR.prefixlen}", ns)
    for ip in names.REMOTE_CLIENT_IPS:
        await netns.add_address("lo", f"{ip}/32", ns)


async def build_router(n: LabNames, router: str = "router") -> None:
    """A router's NICs: eth0 on its network's guest segment, eth2 on the public one.

    Their addresses come from the router document (the agent's job); the lab only
    plugs the cables and turns on forwarding, as a hypervisor and boot would.
    """
    spec = names.ROUTERS[router]
    ns = n.ns(router)
    await netns.add_namespace(ns)
    await plug(n, spec.port_guest, names.NETWORKS[spec.network].bridge, ns, "eth0",
               spec.macs["eth0"])
    await plug(n, spec.port_public, PUBLIC_BRIDGE, ns, "eth2", spec.macs["eth2"])
    await netns.sysctl(ns, "net.ipv4.ip_forward", "1")


async def build_control(n: LabNames, octet: int, routers: tuple[str, ...] = ("router",)) -> None:
    """Root-namespace bridge 169.254.<octet>.1/24 and each router's eth1 on it
    (169.254.<octet>.2 for router, .3 for rb, .4 for router2)."""
    host, _ = names.control_addresses(octet)
    await netns.add_bridge(n.control_bridge)
    await netns.add_address(n.control_bridge, str(host))
    for router in routers:
        _, addr = names.control_addresses(octet, router)
        veth, ns = n.control_veth_of(router), n.ns(router)
        await netns.add_veth(veth, None, "eth1", ns, peer_mac=names.ROUTERS[router].macs["eth1"])
        await netns.set_master(veth, n.control_bridge)
        await netns.set_up(veth)
        await netns.add_address("eth1", str(addr), ns)
        await netns.set_up("eth1", ns)


async def build_roadwarrior(n: LabNames) -> None:
    """The road-warrior client "rw": 203.0.113.50 on the public segment, default route via
    the internet (203.0.113.1); it reaches every router's public address directly."""
    ns = n.ns(names.ROADWARRIOR)
    await netns.add_namespace(ns)
    await plug(n, names.ROADWARRIOR, PUBLIC_BRIDGE, ns, "eth0", names.ROADWARRIOR_MAC)
    await netns.add_address("eth0", f"{names.ROADWARRIOR_IP}/{names.PUBLIC_CIDR.prefixlen}", ns)
    await netns.ip(ns, "route", "add", "default", "via", str(names.INTERNET_IP))


async def build_guest(n: LabNames, guest: Guest) -> None:
    ns = n.ns(guest.name)
    await netns.add_namespace(ns)
    await plug(n, guest.name, names.NETWORKS[guest.network].bridge, ns, "eth0", guest.mac)


async def remove_guest(n: LabNames, guest: Guest) -> None:
    ns = n.ns(guest.name)
    await netns.kill_namespace_processes(ns)
    await netns.delete_namespace(ns)
    await netns.delete_link(guest.name, n.switch)  # gone with the ns; this is for safety


@contextlib.asynccontextmanager
async def allocation_lock() -> AsyncIterator[None]:
    """Serialise control-subnet choice and creation between labs built at the same time."""
    ALLOC_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(ALLOC_LOCK, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _conflicts(candidate: ipaddress.IPv4Network, used: list[str]) -> bool:
    for text in used:
        iface = ipaddress.IPv4Interface(text)
        if iface.ip in candidate:
            return True
        # A /16 link-local route on the host is fine: our /24 is more specific.
        if iface.network.prefixlen >= candidate.prefixlen and iface.network.overlaps(candidate):
            return True
    return False


async def choose_control_octet(lab: str) -> int:
    """A free 169.254.N.0/24 (N in 100..199, not 169), starting from a hash of the lab name
    so a lab tends to get the same subnet each time. Call under allocation_lock()."""
    used = await netns.root_ipv4_networks()
    octets = names.CONTROL_OCTETS
    start = zlib.crc32(lab.encode()) % len(octets)
    for k in range(len(octets)):
        octet = octets[(start + k) % len(octets)]
        if not _conflicts(ipaddress.IPv4Network(f"169.254.{octet}.0/24"), used):
            return octet
    raise RuntimeError("no free control subnet 169.254.100-199.0/24 on this host")
