"""From a router document to the nftables ruleset: chains plus set/map contents.

Per-rule data never becomes a rule line; it becomes an element of a set or a
map, looked up in O(1) by a handful of fixed rules. That keeps both the packet
path and the apply time independent of the number of forwards and firewall
rules, and lets a change be applied as element additions and deletions only.

Hash sets (no ``flags interval``) carry the common cases (single ports, any
source); interval sets (the kernel's pipapo backend, whose load time grows
faster than linearly) carry only rules with port ranges or narrower CIDRs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from appliances.router.document import ANY_V4, RouterDocument

TABLE = "skiff"
FAMILY = "ip"

#: Every set and map, with its nft type declaration. Order is render order.
SETS: dict[str, tuple[str, bool]] = {
    # name: (type, interval)
    "public_ips": ("ipv4_addr", False),
    "pf_port": ("ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service", False),
    "pf_range": ("ipv4_addr . inet_proto . inet_service : ipv4_addr", True),
    "pf_limited": ("ipv4_addr . inet_proto . inet_service", True),
    "pf_limited_src": ("ipv4_addr . inet_proto . inet_service . ipv4_addr", True),
    "nat1to1_in": ("ipv4_addr : ipv4_addr", False),
    "nat1to1_out": ("ipv4_addr : ipv4_addr", False),
    "in_exact": ("ipv4_addr . inet_proto . inet_service", False),
    "in_l4": ("ipv4_addr . inet_proto . inet_service . ipv4_addr", True),
    "in_icmp": ("ipv4_addr . icmp_type . icmp_code . ipv4_addr", True),
    "in_all": ("ipv4_addr . ipv4_addr", True),
    "eg_l4": ("ipv4_addr . inet_proto . inet_service . ipv4_addr", True),
    "eg_icmp": ("ipv4_addr . icmp_type . icmp_code . ipv4_addr", True),
    "eg_all": ("ipv4_addr . ipv4_addr", True),
}


@dataclass
class NftPlan:
    """What to render: scalar context for the chains, and each set's elements.

    ``elements[name]`` maps an element key to its map value (None for sets), as
    the text nft expects, so that two plans can be diffed element by element.
    """

    context: dict
    elements: dict[str, dict[str, str | None]] = field(default_factory=dict)


def _ports(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def _icmp(value: int | None) -> str:
    return "0-255" if value in (None, -1) else str(value)


def plan(doc: RouterDocument, agent_port: int) -> NftPlan:
    public = doc.interface("public")
    guest = doc.interface("guest")
    control = doc.interface("control")
    elements: dict[str, dict[str, str | None]] = {name: {} for name in SETS}

    for pub in doc.public_ips:
        elements["public_ips"][str(pub.ip)] = None

    for pf in doc.port_forwards:
        (ps, pe), (gs, _ge) = pf.public_range, pf.guest_range
        if ps == pe:
            elements["pf_port"][f"{pf.public_ip} . {pf.protocol} . {ps}"] = f"{pf.guest_ip} . {gs}"
        elif ps == gs:
            # Same numbers on both sides: DNAT the address only and keep the port.
            elements["pf_range"][f"{pf.public_ip} . {pf.protocol} . {ps}-{pe}"] = str(pf.guest_ip)
        else:
            # A shifted range: nft maps cannot add an offset, so expand it (capped in verify).
            for offset in range(pe - ps + 1):
                key = f"{pf.public_ip} . {pf.protocol} . {ps + offset}"
                elements["pf_port"][key] = f"{pf.guest_ip} . {gs + offset}"
        if pf.source_cidrs != [ANY_V4]:
            key = f"{pf.public_ip} . {pf.protocol} . {_ports(ps, pe)}"
            elements["pf_limited"][key] = None
            for cidr in pf.source_cidrs:
                elements["pf_limited_src"][f"{key} . {cidr}"] = None

    for sn in doc.static_nats:
        elements["nat1to1_in"][str(sn.public_ip)] = str(sn.guest_ip)
        elements["nat1to1_out"][str(sn.guest_ip)] = str(sn.public_ip)

    for rule in doc.ingress_rules:
        _add_rule(elements, "in", str(rule.public_ip), rule, rule.source_cidrs)

    guest_cidr = doc.guest_network.cidr
    for rule in doc.egress.rules:
        for src in rule.source_cidrs or [guest_cidr]:
            _add_rule(elements, "eg", str(src), rule, rule.destination_cidrs)

    context = {
        "table": TABLE,
        "family": FAMILY,
        "router_id": doc.router_id,
        "generation": doc.generation,
        "sets": SETS,
        "guest_if": guest.name if guest else None,
        "public_if": public.name if public else None,
        "control_if": control.name if control else None,
        "guest_cidr": str(guest_cidr),
        "source_nat_ip": str(doc.source_nat_ip) if doc.source_nat_ip else None,
        "egress_default": doc.egress.default_policy,
        "agent_port": agent_port,
    }
    return NftPlan(context=context, elements=elements)


def _add_rule(elements, prefix: str, first: str, rule, cidrs: list[ipaddress.IPv4Network]) -> None:
    """One firewall rule -> set elements keyed ``first . <match> . cidr``."""
    if rule.protocol in ("tcp", "udp"):
        start, end = rule.port_range
        if prefix == "in" and start == end and cidrs == [ANY_V4]:
            elements["in_exact"][f"{first} . {rule.protocol} . {start}"] = None
            return
        for cidr in cidrs:
            elements[f"{prefix}_l4"][f"{first} . {rule.protocol} . {_ports(start, end)} . {cidr}"] = None
    elif rule.protocol == "icmp":
        for cidr in cidrs:
            key = f"{first} . {_icmp(rule.icmp_type)} . {_icmp(rule.icmp_code)} . {cidr}"
            elements[f"{prefix}_icmp"][key] = None
    else:
        for cidr in cidrs:
            elements[f"{prefix}_all"][f"{first} . {cidr}"] = None
