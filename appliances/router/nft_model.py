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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliances.router import derivation
from appliances.router.document import (
    ANY_V4,
    EgressRule,
    IngressRule,
    PortForward,
    PublicIp,
    RouterDocument,
    StaticNat,
)
from appliances.router.sections.load_balancing import LbRule
from appliances.router.sections.vpn import Vpn

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
    # The router's own services on public IPs (load balancer listeners, IKE):
    # open to any source, or to the listed sources only.
    "svc_any": ("ipv4_addr . inet_proto . inet_service", False),
    "svc_src": ("ipv4_addr . inet_proto . inet_service . ipv4_addr", True),
    # VPN (strongSwan): source . destination between local and peer CIDRs (both
    # directions; never source-NATed, always forwarded), and our gateway . peer
    # gateway pairs whose ESP is accepted (kernel data path).
    "vpn_pairs": ("ipv4_addr . ipv4_addr", True),
    "vpn_esp": ("ipv4_addr . ipv4_addr", True),
}


Element = tuple[str, str, str | None]  # (set name, key, map value or None)


@dataclass
class NftPlan:
    """What to render: scalar context for the chains, and each set's elements.

    ``elements[name]`` maps an element key to its map value (None for sets), as
    the text nft expects.
    """

    context: dict
    elements: dict[str, dict[str, str | None]] = field(default_factory=dict)


def _ports(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def _icmp(value: int | None) -> str:
    return "0-255" if value in (None, -1) else str(value)


def shape_context(doc: RouterDocument, agent_port: int) -> dict:
    """Everything the chains depend on. Equal contexts mean equal chains, so only
    set and map elements can differ between two documents."""
    public = doc.interface("public")
    guest = doc.interface("guest")
    control = doc.interface("control")
    return {
        "table": TABLE,
        "family": FAMILY,
        "router_id": doc.router_id,
        "sets": SETS,
        "guest_if": guest.name if guest else None,
        "public_if": public.name if public else None,
        "control_if": control.name if control else None,
        "guest_cidr": doc.guest_network.cidr,
        "source_nat_ip": doc.source_nat_ip,
        "egress_default": doc.egress.default_policy,
        "agent_port": agent_port,
        # The metadata and password service listens on the guest gateway.
        "guest_data": bool(doc.guest_data),
        "vrrp_if": doc.redundancy.sync_interface if doc.redundancy else None,
    }


def public_ip_elements(pub: PublicIp, guest_cidr: str) -> list[Element]:
    return [("public_ips", pub.ip, None)]


def forward_elements(pf: PortForward, guest_cidr: str) -> list[Element]:
    (ps, pe), (gs, _ge) = pf.public_range, pf.guest_range
    out: list[Element] = []
    if ps == pe:
        out.append(("pf_port", f"{pf.public_ip} . {pf.protocol} . {ps}", f"{pf.guest_ip} . {gs}"))
    elif ps == gs:
        # Same numbers on both sides: DNAT the address only and keep the port.
        out.append(("pf_range", f"{pf.public_ip} . {pf.protocol} . {ps}-{pe}", pf.guest_ip))
    else:
        # A shifted range: nft maps cannot add an offset, so expand it (capped in verify).
        for offset in range(pe - ps + 1):
            key = f"{pf.public_ip} . {pf.protocol} . {ps + offset}"
            out.append(("pf_port", key, f"{pf.guest_ip} . {gs + offset}"))
    if pf.source_cidrs != [ANY_V4]:
        key = f"{pf.public_ip} . {pf.protocol} . {_ports(ps, pe)}"
        out.append(("pf_limited", key, None))
        out += [("pf_limited_src", f"{key} . {cidr}", None) for cidr in pf.source_cidrs]
    return out


def static_nat_elements(sn: StaticNat, guest_cidr: str) -> list[Element]:
    return [("nat1to1_in", sn.public_ip, sn.guest_ip), ("nat1to1_out", sn.guest_ip, sn.public_ip)]


def ingress_elements(rule: IngressRule, guest_cidr: str) -> list[Element]:
    return _rule_elements("in", rule.public_ip, rule, rule.source_cidrs)


def egress_elements(rule: EgressRule, guest_cidr: str) -> list[Element]:
    out: list[Element] = []
    for src in rule.source_cidrs or [guest_cidr]:
        out += _rule_elements("eg", src, rule, rule.destination_cidrs)
    return out


def _rule_elements(prefix: str, first: str, rule, cidrs: list[str]) -> list[Element]:
    """One firewall rule -> set elements keyed ``first . <match> . cidr``."""
    if rule.protocol in ("tcp", "udp"):
        start, end = rule.port_range
        if prefix == "in" and start == end and cidrs == [ANY_V4]:
            return [("in_exact", f"{first} . {rule.protocol} . {start}", None)]
        ports = _ports(start, end)
        return [(f"{prefix}_l4", f"{first} . {rule.protocol} . {ports} . {c}", None) for c in cidrs]
    if rule.protocol == "icmp":
        match = f"{_icmp(rule.icmp_type)} . {_icmp(rule.icmp_code)}"
        return [(f"{prefix}_icmp", f"{first} . {match} . {c}", None) for c in cidrs]
    return [(f"{prefix}_all", f"{first} . {c}", None) for c in cidrs]


def _service_elements(ip: str, proto: str, port: int, sources: list[str]) -> list[Element]:
    if sources == [ANY_V4]:
        return [("svc_any", f"{ip} . {proto} . {port}", None)]
    return [("svc_src", f"{ip} . {proto} . {port} . {cidr}", None) for cidr in sources]


def lb_elements(rule: LbRule, guest_cidr: str) -> list[Element]:
    return _service_elements(rule.public_ip, "tcp", rule.public_port, rule.source_cidrs)


IKE_PORTS = (500, 4500)


def vpn_elements(vpn: Vpn, guest_cidr: str) -> list[Element]:
    """IKE and NAT-T from each site-to-site peer; from anywhere for remote access."""
    out: list[Element] = []
    for conn in vpn.site_to_site:
        for port in IKE_PORTS:
            out += _service_elements(conn.local_gateway, "udp", port, [f"{conn.peer_gateway}/32"])
    if vpn.remote_access is not None:
        for port in IKE_PORTS:
            out += _service_elements(vpn.remote_access.public_ip, "udp", port, [ANY_V4])
    return out + vpn_traffic_elements(vpn, guest_cidr)


def vpn_traffic_elements(vpn: Vpn, guest_cidr: str) -> list[Element]:
    """Pairs of VPN traffic (both directions) and the ESP peers."""
    out: list[Element] = []
    for conn in vpn.site_to_site:
        for lc in conn.local_cidrs:
            for pc in conn.peer_cidrs:
                out += [("vpn_pairs", f"{lc} . {pc}", None), ("vpn_pairs", f"{pc} . {lc}", None)]
        out.append(("vpn_esp", f"{conn.local_gateway} . {conn.peer_gateway}", None))
    ra = vpn.remote_access
    if ra is not None:
        pool = f"{ra.pool_start}-{ra.pool_end}"
        out += [("vpn_pairs", f"{guest_cidr} . {pool}", None),
                ("vpn_pairs", f"{pool} . {guest_cidr}", None),
                ("vpn_esp", f"{ra.public_ip} . {ANY_V4}", None)]
    return out


#: Every list of the document that becomes set elements, with its element function.
SECTIONS: dict[str, Callable[[Any, str], list[Element]]] = {
    "public_ips": public_ip_elements,
    "port_forwards": forward_elements,
    "static_nats": static_nat_elements,
    "ingress_rules": ingress_elements,
    "egress_rules": egress_elements,
    "load_balancers": lb_elements,
    "vpn": vpn_elements,
}


def section_items(doc: RouterDocument, section: str) -> list:
    if section == "egress_rules":
        return doc.egress.rules
    if section == "vpn":
        return [doc.vpn]  # one item: small, compared whole
    return getattr(doc, section)


def plan(doc: RouterDocument, agent_port: int) -> NftPlan:
    elements: dict[str, dict[str, str | None]] = {name: {} for name in SETS}
    cidr = doc.guest_network.cidr
    for section, fn in SECTIONS.items():
        for item in section_items(doc, section):
            for name, key, value in fn(item, cidr):
                elements[name][key] = value
    context = {**shape_context(doc, agent_port), "generation": doc.generation}
    return NftPlan(context=context, elements=elements)


def element_changes(
    old: RouterDocument, new: RouterDocument
) -> tuple[dict[str, list[str]], dict[str, dict[str, str | None]]]:
    """(deletes, adds) turning ``old``'s elements into ``new``'s, from the items that
    differ by identity. Valid only when both have the same shape context."""
    deletes: dict[str, list[str]] = {}
    adds: dict[str, dict[str, str | None]] = {}
    cidr = new.guest_network.cidr
    for section, fn in SECTIONS.items():
        before, after = section_items(old, section), section_items(new, section)
        added, removed = derivation.changes(old, new, section, before, after)
        for item in removed:
            for name, key, _value in fn(item, cidr):
                deletes.setdefault(name, []).append(key)
        for item in added:
            for name, key, value in fn(item, cidr):
                adds.setdefault(name, {})[key] = value
    return deletes, adds
