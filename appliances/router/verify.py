"""Pure, whole-document checks of a router document (the "verify" step).

Pydantic checks each field on its own; here we check how fields relate: that
addresses sit in the right networks, nothing is defined twice and no two
rules contradict each other. Every problem is reported, each with its place,
so one round trip is enough to fix a document. Nothing here touches the system,
so it doubles as a dry run (``skiff router verify``).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from appliances.common.errors import DocumentError, FieldError
from appliances.router.document import RouterDocument

#: Shifted port-range forwards are expanded port by port into a hash map; cap it.
MAX_EXPANDED_FORWARD_PORTS = 65_536


def parse_document(data: Any) -> RouterDocument:
    """Validate raw JSON data into a document, or raise DocumentError naming every bad field."""
    try:
        doc = RouterDocument.model_validate(data)
    except ValidationError as exc:
        raise DocumentError.from_validation_error(exc) from None
    errors = list(verify(doc))
    if errors:
        raise DocumentError(errors)
    return doc


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    yield from _interfaces(doc)
    yield from _guest_network(doc)
    public_nets = [
        a.network for i in doc.interfaces if i.role == "public" for a in i.addresses
    ]
    yield from _public_ips(doc, public_nets)
    yield from _dhcp_hosts(doc)
    yield from _duplicates(
        ((f"dns_records.{n}", (r.name.lower(), r.ip)) for n, r in enumerate(doc.dns_records)),
        "the same DNS record",
    )
    yield from _ingress(doc)
    yield from _egress(doc)
    yield from _port_forwards(doc)
    yield from _static_nats(doc)
    yield from _static_routes(doc, public_nets)


def _duplicates(items: Iterable[tuple[str, Any]], what: str) -> Iterator[FieldError]:
    seen: dict[Any, str] = {}
    for loc, key in items:
        if key in seen:
            yield FieldError(loc, f"{what} as {seen[key]}")
        else:
            seen[key] = loc


def _in_guest(doc: RouterDocument, ip: ipaddress.IPv4Address, loc: str) -> Iterator[FieldError]:
    net = doc.guest_network.cidr
    if ip not in net:
        yield FieldError(loc, f"{ip} is not in the guest network {net}")
    elif ip in (net.network_address, net.broadcast_address) and net.prefixlen < 31:
        yield FieldError(loc, f"{ip} is the network or broadcast address of {net}")
    elif ip == doc.guest_network.gateway:
        yield FieldError(loc, f"{ip} is the guest gateway (the router itself)")


def _interfaces(doc: RouterDocument) -> Iterator[FieldError]:
    by_role: dict[str, list[int]] = defaultdict(list)
    for n, iface in enumerate(doc.interfaces):
        by_role[iface.role].append(n)
        if iface.gateway is not None:
            if iface.role != "public":
                yield FieldError(f"interfaces.{n}.gateway", "only the public interface has a gateway")
            elif not any(iface.gateway in a.network for a in iface.addresses):
                yield FieldError(
                    f"interfaces.{n}.gateway",
                    f"{iface.gateway} is not in any subnet of interface {iface.name}",
                )
    if len(by_role["guest"]) != 1:
        yield FieldError("interfaces", "exactly one interface must have role guest")
    for role in ("public", "control"):
        for n in by_role[role][1:]:
            yield FieldError(f"interfaces.{n}.role", f"only one {role} interface is allowed")
    yield from _duplicates(
        ((f"interfaces.{n}.name", i.name) for n, i in enumerate(doc.interfaces)),
        "the same name",
    )
    yield from _duplicates(
        ((f"interfaces.{n}.mac", i.mac) for n, i in enumerate(doc.interfaces) if i.mac),
        "the same MAC",
    )
    nets = [
        (addr.network, n, f"interfaces.{n}.addresses.{k}")
        for n, iface in enumerate(doc.interfaces)
        for k, addr in enumerate(iface.addresses)
    ]
    for i, (net, n, loc) in enumerate(nets):
        for other, m, other_loc in nets[:i]:
            if m != n and net.overlaps(other):
                yield FieldError(loc, f"{net} overlaps {other} of {other_loc}")


def _guest_network(doc: RouterDocument) -> Iterator[FieldError]:
    gn = doc.guest_network
    if gn.cidr.prefixlen > 30:
        yield FieldError("guest_network.cidr", f"{gn.cidr} is too small for guests (/30 at most)")
    if gn.gateway not in gn.cidr or gn.gateway in (gn.cidr.network_address, gn.cidr.broadcast_address):
        yield FieldError("guest_network.gateway", f"{gn.gateway} is not a host address in {gn.cidr}")
    guest_if = doc.interface("guest")
    if guest_if is not None:
        wanted = ipaddress.IPv4Interface(f"{gn.gateway}/{gn.cidr.prefixlen}")
        if wanted not in guest_if.addresses:
            n = doc.interfaces.index(guest_if)
            yield FieldError(
                f"interfaces.{n}.addresses",
                f"the guest interface must carry the gateway address {wanted}",
            )
    for n, route in enumerate(gn.classless_routes):
        if route.gateway not in gn.cidr:
            yield FieldError(
                f"guest_network.classless_routes.{n}.gateway",
                f"{route.gateway} is not in the guest network {gn.cidr}",
            )
        if route.destination.prefixlen == 0:
            yield FieldError(
                f"guest_network.classless_routes.{n}.destination",
                "the default route is the gateway's job; do not list 0.0.0.0/0",
            )
    yield from _duplicates(
        ((f"guest_network.classless_routes.{n}.destination", r.destination)
         for n, r in enumerate(gn.classless_routes)),
        "the same destination",
    )


def _public_ips(doc: RouterDocument, public_nets: list) -> Iterator[FieldError]:
    if doc.public_ips and not public_nets:
        yield FieldError("public_ips", "public IPs need an interface with role public")
    snat = [n for n, p in enumerate(doc.public_ips) if p.source_nat]
    for n in snat[1:]:
        yield FieldError(f"public_ips.{n}.source_nat", "only one public IP can be the source NAT IP")
    for n, pub in enumerate(doc.public_ips):
        if public_nets and not any(pub.ip in net for net in public_nets):
            yield FieldError(f"public_ips.{n}.ip", f"{pub.ip} is not in a subnet of the public interface")
    yield from _duplicates(
        ((f"public_ips.{n}.ip", p.ip) for n, p in enumerate(doc.public_ips)), "the same address"
    )


def _dhcp_hosts(doc: RouterDocument) -> Iterator[FieldError]:
    for n, host in enumerate(doc.dhcp_hosts):
        yield from _in_guest(doc, host.ip, f"dhcp_hosts.{n}.ip")
    hosts = list(enumerate(doc.dhcp_hosts))
    yield from _duplicates(((f"dhcp_hosts.{n}.mac", h.mac) for n, h in hosts), "the same MAC")
    yield from _duplicates(((f"dhcp_hosts.{n}.ip", h.ip) for n, h in hosts), "the same IP")
    yield from _duplicates(
        ((f"dhcp_hosts.{n}.hostname", h.hostname.lower()) for n, h in hosts), "the same hostname"
    )


def _public_ip_known(doc: RouterDocument, ip, loc: str, publics: set) -> Iterator[FieldError]:
    if ip not in publics:
        yield FieldError(loc, f"{ip} is not one of the router's public_ips")


def _ingress(doc: RouterDocument) -> Iterator[FieldError]:
    publics = {p.ip for p in doc.public_ips}
    for n, rule in enumerate(doc.ingress_rules):
        yield from _public_ip_known(doc, rule.public_ip, f"ingress_rules.{n}.public_ip", publics)
    yield from _duplicates(
        ((f"ingress_rules.{n}.id", r.id) for n, r in enumerate(doc.ingress_rules)), "the same id"
    )
    yield from _conflicts(
        "ingress_rules",
        (
            (n, (r.public_ip, r.protocol), _match_range(r), [(c,) for c in r.source_cidrs])
            for n, r in enumerate(doc.ingress_rules)
        ),
    )


def _egress(doc: RouterDocument) -> Iterator[FieldError]:
    guest = doc.guest_network.cidr
    for n, rule in enumerate(doc.egress.rules):
        for k, cidr in enumerate(rule.source_cidrs):
            if not cidr.subnet_of(guest):
                yield FieldError(
                    f"egress.rules.{n}.source_cidrs.{k}", f"{cidr} is not inside the guest network {guest}"
                )
    yield from _duplicates(
        ((f"egress.rules.{n}.id", r.id) for n, r in enumerate(doc.egress.rules)), "the same id"
    )
    yield from _conflicts(
        "egress.rules",
        (
            (n, (r.protocol,), _match_range(r),
             [(s, d) for s in r.source_cidrs or [guest] for d in r.destination_cidrs])
            for n, r in enumerate(doc.egress.rules)
        ),
    )


def _match_range(rule) -> tuple[tuple[int, int], ...]:
    """What a rule matches besides addresses, as ranges: ports, or ICMP type and code."""
    if rule.protocol in ("tcp", "udp"):
        return (rule.port_range,)
    if rule.protocol == "icmp":
        t = (0, 255) if rule.icmp_type in (None, -1) else (rule.icmp_type, rule.icmp_type)
        c = (0, 255) if rule.icmp_code in (None, -1) else (rule.icmp_code, rule.icmp_code)
        return (t, c)
    return ((0, 0),)


def _overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b, strict=True))


def _conflicts(where: str, rules) -> Iterator[FieldError]:
    """Rules that match the same packets conflict (CloudStack refuses them too), and the
    kernel's interval sets refuse overlapping elements. A sweep by range start keeps
    the usual case (distinct ports) at O(n log n)."""
    groups: dict[tuple, list] = defaultdict(list)
    for n, key, match, cidr_tuples in rules:
        groups[key].append((match, n, cidr_tuples))
    for items in groups.values():
        items.sort(key=lambda item: item[0][0][0])
        active: list = []
        for match, n, cidrs in items:
            active = [a for a in active if a[0][0][1] >= match[0][0]]
            clash = _cidr_clash(cidrs, cidrs, same=True)
            if clash:
                yield FieldError(f"{where}.{n}", f"its own entries overlap ({clash})")
            for other_match, m, other_cidrs in active:
                clash = _overlap(match, other_match) and _cidr_clash(cidrs, other_cidrs)
                if clash:
                    yield FieldError(f"{where}.{n}", f"overlaps {where}.{m} ({clash})")
                    break
            active.append((match, n, cidrs))


def _cidr_clash(a: list[tuple], b: list[tuple], same: bool = False) -> str | None:
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if same and j <= i:
                continue
            if all(p.overlaps(q) for p, q in zip(x, y, strict=True)):
                return " and ".join(" -> ".join(str(c) for c in t) for t in (x, y))
    return None


def _port_forwards(doc: RouterDocument) -> Iterator[FieldError]:
    publics = {p.ip for p in doc.public_ips}
    static = {s.public_ip for s in doc.static_nats}
    expanded = 0
    by_key: dict[tuple, list[tuple[int, int, int]]] = defaultdict(list)
    for n, pf in enumerate(doc.port_forwards):
        loc = f"port_forwards.{n}"
        yield from _public_ip_known(doc, pf.public_ip, f"{loc}.public_ip", publics)
        if pf.public_ip in static:
            yield FieldError(f"{loc}.public_ip", f"{pf.public_ip} is used for static NAT")
        yield from _in_guest(doc, pf.guest_ip, f"{loc}.guest_ip")
        clash = _cidr_clash([(c,) for c in pf.source_cidrs], [(c,) for c in pf.source_cidrs], True)
        if clash:
            yield FieldError(f"{loc}.source_cidrs", f"entries overlap ({clash})")
        start, end = pf.public_range
        if start != pf.guest_start and end > start:
            expanded += end - start + 1
        by_key[(pf.public_ip, pf.protocol)].append((start, end, n))
    if expanded > MAX_EXPANDED_FORWARD_PORTS:
        yield FieldError(
            "port_forwards",
            f"forwards whose public and guest ranges differ cover {expanded} ports in all; "
            f"at most {MAX_EXPANDED_FORWARD_PORTS} (use equal ranges, which cost one entry each)",
        )
    for (ip, proto), ranges in by_key.items():
        ranges.sort()
        reach_end, reach_n = 0, -1
        for start, end, n in ranges:
            if start <= reach_end:
                yield FieldError(
                    f"port_forwards.{n}.public_start",
                    f"{proto} {ip} ports {start}-{end} overlap port_forwards.{reach_n}",
                )
            if end > reach_end:
                reach_end, reach_n = end, n
    yield from _duplicates(
        ((f"port_forwards.{n}.id", r.id) for n, r in enumerate(doc.port_forwards)), "the same id"
    )


def _static_nats(doc: RouterDocument) -> Iterator[FieldError]:
    publics = {p.ip for p in doc.public_ips}
    snat = doc.source_nat_ip
    for n, sn in enumerate(doc.static_nats):
        yield from _public_ip_known(doc, sn.public_ip, f"static_nats.{n}.public_ip", publics)
        if sn.public_ip == snat:
            yield FieldError(f"static_nats.{n}.public_ip", f"{sn.public_ip} is the source NAT IP")
        yield from _in_guest(doc, sn.guest_ip, f"static_nats.{n}.guest_ip")
    items = list(enumerate(doc.static_nats))
    yield from _duplicates(((f"static_nats.{n}.public_ip", s.public_ip) for n, s in items),
                           "the same public IP")
    yield from _duplicates(((f"static_nats.{n}.guest_ip", s.guest_ip) for n, s in items),
                           "the same guest IP")


def _static_routes(doc: RouterDocument, public_nets: list) -> Iterator[FieldError]:
    connected = [doc.guest_network.cidr, *public_nets]
    for n, route in enumerate(doc.static_routes):
        if not any(route.gateway in net for net in connected):
            yield FieldError(
                f"static_routes.{n}.gateway",
                f"{route.gateway} is not on a directly connected network (guest or public)",
            )
        if route.cidr.overlaps(doc.guest_network.cidr):
            yield FieldError(f"static_routes.{n}.cidr", f"{route.cidr} overlaps the guest network")
        if route.cidr.prefixlen == 0:
            yield FieldError(f"static_routes.{n}.cidr", "the default route comes from the public gateway")
    yield from _duplicates(
        ((f"static_routes.{n}.cidr", r.cidr) for n, r in enumerate(doc.static_routes)),
        "the same destination",
    )
