"""Interfaces, addresses, routes and forwarding of the router itself.

Reads the kernel's state with ``ip -json`` and sends only the difference in one
``ip -batch`` run. The control interface is never changed: it is how the
management server reaches this agent, and it is configured at boot.
Routes Skiff adds carry their own protocol number, so the ones that are no
longer wanted can be found and removed without touching anybody else's.

In a redundant pair (the document has a ``redundancy`` section) each router puts
only its own addresses on the interfaces; the shared ones (the interface addresses
and public IPs of the document) and the default route belong to keepalived, which
holds them on the primary: this service neither adds nor removes them (the
redundancy service clears them once, before keepalived first starts).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

from appliances.agent.service import Change, Service
from appliances.common.diff import same_items
from appliances.common.errors import ApplyError
from appliances.common.proc import run
from appliances.router.document import RouterDocument
from appliances.router.vips import shared_by_interface

IP = "ip"
#: Marks routes owned by Skiff; not one iproute2 assigns (186 would be bgp, 18 keepalived).
ROUTE_PROTO = "95"
FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
IPV4_CONF = Path("/proc/sys/net/ipv4/conf")


@dataclass
class _Plan:
    commands: list[str]
    missing: list[str]
    doc: RouterDocument
    promote: list[str] = field(default_factory=list)


def _promote_path(ifname: str) -> Path:
    return IPV4_CONF / ifname / "promote_secondaries"


def _affects_network(old: RouterDocument, new: RouterDocument) -> bool:
    return not (
        old.interfaces == new.interfaces
        and same_items(old.public_ips, new.public_ips)
        and old.static_routes == new.static_routes
        and old.redundancy == new.redundancy
    )


class NetworkService(Service):
    name = "network"

    def __init__(self, ctx):
        super().__init__(ctx)
        self._applied: RouterDocument | None = None

    async def prepare(self, doc: RouterDocument) -> Change:
        prev = self._applied
        if prev is not None and not _affects_network(prev, doc):
            return Change(self.name, False, "unchanged")
        links, addrs_list, routes = await asyncio.gather(
            _ip_json("link", "show"),
            _ip_json("addr", "show"),
            _ip_json("route", "show", "proto", ROUTE_PROTO),
        )
        links = {link["ifname"]: link for link in links}
        addrs = {entry["ifname"]: entry for entry in addrs_list}
        return self._plan(doc, links, addrs, routes)

    def _plan(self, doc, links, addrs, routes) -> Change:
        commands: list[str] = []
        missing: list[str] = []
        for iface in doc.interfaces:
            link = links.get(iface.name)
            if link is None:
                missing.append(f"interface {iface.name} ({iface.role}) does not exist")
                continue
            if iface.mac and link.get("address", "").lower() != iface.mac:
                missing.append(
                    f"interface {iface.name} has MAC {link.get('address')}, "
                    f"the document says {iface.mac}"
                )
                continue
            if iface.role == "control":
                continue
            if link.get("mtu") != iface.mtu:
                commands.append(f"link set dev {iface.name} mtu {iface.mtu}")
            if "UP" not in link.get("flags", []):
                commands.append(f"link set dev {iface.name} up")
            commands += _address_commands(iface, addrs.get(iface.name, {}), doc)
        commands += _route_commands(doc, routes)
        summary = f"{len(commands)} change(s)" if commands else "unchanged"
        forwarding_off = FORWARDING.read_text().strip() != "1"
        # In a pair, addresses come and go beside each other in one subnet (own address,
        # VIP): removing the first one must not take the others with it.
        promote = [
            i.name for i in doc.interfaces
            if doc.redundancy is not None and i.role != "control" and i.name in links
            and _promote_path(i.name).read_text().strip() != "1"
        ]
        if not (commands or missing or forwarding_off or promote):
            self._applied = doc  # the kernel already matches
        return Change(
            self.name, bool(commands or missing or forwarding_off or promote), summary,
            _Plan(commands, missing, doc, promote),
        )

    async def check(self, change: Change) -> None:
        if change.data.missing:
            raise ApplyError(self.name, "; ".join(change.data.missing))

    async def commit(self, change: Change) -> None:
        self._applied = None
        for ifname in change.data.promote:
            _promote_path(ifname).write_text("1\n")
        if change.data.commands:
            script = "\n".join(change.data.commands) + "\n"
            result = await run([IP, "-batch", "-"], input=script)
            if not result.ok:
                raise ApplyError(self.name, "ip refused a change", result.output)
        FORWARDING.write_text("1\n")
        self._applied = change.data.doc

    async def reconcile(self, doc: RouterDocument) -> None:
        """Compare with the kernel again and converge (after keepalived released
        the shared addresses when the router left a pair)."""
        self._applied = None
        change = await self.prepare(doc)
        if change.changed:
            await self.check(change)
            await self.commit(change)


def _address_commands(iface, current: dict, doc: RouterDocument) -> list[str]:
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for a in current.get("addr_info", [])
        if a.get("family") == "inet" and a.get("scope") == "global"
    }
    if doc.redundancy is not None:
        wanted = {str(o.address) for o in doc.redundancy.own_addresses
                  if o.interface == iface.name}
        shared = shared_by_interface(doc).get(iface.name, set())
        have -= shared  # keepalived's, whether it holds them now or not
        cmds = [f"address add {a} dev {iface.name}" for a in sorted(wanted - have)]
        cmds += [f"address del {a} dev {iface.name}" for a in sorted(have - wanted)]
        return cmds
    wanted = {str(a) for a in iface.addresses}
    if iface.role == "public":
        own = {str(a.ip) for a in iface.addresses}
        wanted |= {f"{p.ip}/32" for p in doc.public_ips if p.ip not in own}
    # Add before removing, so the interface never goes without an address.
    cmds = [f"address add {a} dev {iface.name}" for a in sorted(wanted - have)]
    cmds += [f"address del {a} dev {iface.name}" for a in sorted(have - wanted)]
    return cmds


def _route_commands(doc: RouterDocument, current: list[dict]) -> list[str]:
    wanted: dict[str, str] = {}
    public = doc.interface("public")
    # In a pair the default route hangs on the shared public address: keepalived's.
    if public and public.gateway and doc.redundancy is None:
        wanted["default"] = str(public.gateway)
    for route in doc.static_routes:
        wanted[str(route.cidr)] = str(route.gateway)
    have = {
        _route_key(r["dst"]): r.get("gateway") for r in current if r.get("dst")
    }
    cmds = [
        f"route replace {dst} via {gw} proto {ROUTE_PROTO}"
        for dst, gw in sorted(wanted.items())
        if have.get(dst) != gw
    ]
    cmds += [f"route del {dst} proto {ROUTE_PROTO}" for dst in sorted(set(have) - set(wanted))]
    return cmds


def _route_key(dst: str) -> str:
    if dst == "default":
        return dst
    return str(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32"))


async def _ip_json(*args: str) -> list[dict]:
    result = await run([IP, "-json", *args])
    if not result.ok:
        raise ApplyError("network", f"ip {' '.join(args)} failed", result.output)
    return json.loads(result.stdout or "[]")
