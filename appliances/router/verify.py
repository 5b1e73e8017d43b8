"""Pure, whole-document checks of a router document (the "verify" step).

Pydantic checks each field on its own; here we check how fields relate: that
addresses sit in the right networks, nothing is defined twice and no two rules
contradict each other. :func:`verify` reports every problem with its place, so
one round trip is enough to fix a document. Nothing here touches the system,
so it doubles as a dry run (``skiff router verify``).

:func:`still_valid` is the fast path for the common update: given the previous
(valid) document and a new one that shares its unchanged items (see
:mod:`appliances.router.parse`), it checks only the added items against the
rest. It may answer "not sure" (False); the caller then runs :func:`verify`.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from pydantic import ValidationError

from appliances.common import addr
from appliances.common.errors import DocumentError, FieldError
from appliances.router import derivation
from appliances.router.document import (
    ANY_V4,
    DhcpHost,
    DnsRecord,
    EgressRule,
    IngressRule,
    PortForward,
    RouterDocument,
)
from appliances.router.sections import guest_data, load_balancing, redundancy, vpn

#: Shifted port-range forwards are expanded port by port into a hash map; cap it.
MAX_EXPANDED_FORWARD_PORTS = 65_536
#: Beyond this many added items a full verify is as cheap as the incremental one.
INCREMENTAL_LIMIT = 256


def parse_document(data: Any) -> RouterDocument:
    """Validate raw JSON data into a document, or raise DocumentError naming every bad field."""
    try:
        doc = RouterDocument.model_validate(data)
    except ValidationError as exc:
        raise DocumentError.from_validation_error(exc) from None
    check(doc)
    return doc


def check(doc: RouterDocument) -> None:
    errors = list(verify(doc))
    if errors:
        raise DocumentError(errors)


@dataclass(frozen=True)
class _Context:
    """What per-item checks need to know about the rest of the document."""

    guest_cidr: str
    gateway: str
    publics: frozenset[str]
    static_publics: frozenset[str]
    source_nat_ip: str | None

    @classmethod
    def of(cls, doc: RouterDocument) -> _Context:
        return cls(
            guest_cidr=doc.guest_network.cidr,
            gateway=doc.guest_network.gateway,
            publics=frozenset(p.ip for p in doc.public_ips),
            static_publics=frozenset(s.public_ip for s in doc.static_nats),
            source_nat_ip=doc.source_nat_ip,
        )


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    ctx = _Context.of(doc)
    public_nets = [
        str(a.network) for i in doc.interfaces if i.role == "public" for a in i.addresses
    ]
    yield from _interfaces(doc)
    yield from _guest_network(doc)
    yield from _public_ips(doc, public_nets)
    for n, host in enumerate(doc.dhcp_hosts):
        yield from _check_host(ctx, host, f"dhcp_hosts.{n}")
    hosts = list(enumerate(doc.dhcp_hosts))
    yield from _duplicates(((f"dhcp_hosts.{n}.mac", h.mac) for n, h in hosts), "the same MAC")
    yield from _duplicates(((f"dhcp_hosts.{n}.ip", h.ip) for n, h in hosts), "the same IP")
    yield from _duplicates(
        ((f"dhcp_hosts.{n}.hostname", h.hostname.lower()) for n, h in hosts), "the same hostname"
    )
    yield from _duplicates(
        ((f"dns_records.{n}", _record_key(r)) for n, r in enumerate(doc.dns_records)),
        "the same DNS record",
    )
    for n, rule in enumerate(doc.ingress_rules):
        yield from _check_ingress(ctx, rule, f"ingress_rules.{n}")
    yield from _duplicates(
        ((f"ingress_rules.{n}.id", r.id) for n, r in enumerate(doc.ingress_rules)), "the same id"
    )
    yield from _conflicts("ingress_rules", doc.ingress_rules, _ingress_key, _ingress_cidrs)
    for n, rule in enumerate(doc.egress.rules):
        yield from _check_egress(ctx, rule, f"egress.rules.{n}")
    yield from _duplicates(
        ((f"egress.rules.{n}.id", r.id) for n, r in enumerate(doc.egress.rules)), "the same id"
    )
    yield from _conflicts(
        "egress.rules", doc.egress.rules, _egress_key, lambda r: _egress_cidrs(r, ctx.guest_cidr)
    )
    yield from _port_forwards(ctx, doc)
    yield from _static_nats(ctx, doc)
    yield from _static_routes(doc, public_nets)
    for section in SERVICE_SECTIONS:
        yield from section.verify(doc)


#: Sections owned by one service each; they verify themselves.
SERVICE_SECTIONS = (load_balancing, vpn, guest_data, redundancy)


def in_guest(doc: RouterDocument, ip: str, loc: str) -> Iterator[FieldError]:
    """Errors if ``ip`` cannot be a guest's address (for the service sections)."""
    gn = doc.guest_network
    yield from _in_guest(_Context(gn.cidr, gn.gateway, frozenset(), frozenset(), None), ip, loc)


# ---------------------------------------------------------------- per-item checks


def _in_guest(ctx: _Context, ip: str, loc: str) -> Iterator[FieldError]:
    first, last = addr.net_range(ctx.guest_cidr)
    value = addr.ip_int(ip)
    if not first <= value <= last:
        yield FieldError(loc, f"{ip} is not in the guest network {ctx.guest_cidr}")
    elif value in (first, last) and last - first > 1:
        yield FieldError(loc, f"{ip} is the network or broadcast address of {ctx.guest_cidr}")
    elif ip == ctx.gateway:
        yield FieldError(loc, f"{ip} is the guest gateway (the router itself)")


def _bad_next_hop(cidr: str, gateway: str, own: set[str]) -> str | None:
    """Why ``gateway`` cannot be a next hop on network ``cidr`` (None if it can)."""
    first, last = addr.net_range(cidr)
    if last - first > 1 and addr.ip_int(gateway) in (first, last):
        return f"{gateway} is the network or broadcast address of {cidr}"
    if gateway in own:
        return f"{gateway} is an address of the router itself"
    return None


def _public_known(ctx: _Context, ip: str, loc: str) -> Iterator[FieldError]:
    if ip not in ctx.publics:
        yield FieldError(loc, f"{ip} is not one of the router's public_ips")


def _own_overlaps(cidrs: list[tuple[str, ...]], loc: str) -> Iterator[FieldError]:
    clash = _cidr_clash(cidrs, cidrs, same=True)
    if clash:
        yield FieldError(loc, f"its own entries overlap ({clash})")


#: The name the router's DNS gives its own guest address (templates/hosts.j2).
ROUTER_HOSTNAME = "router"
RESERVED_HOSTNAMES = frozenset({ROUTER_HOSTNAME})


def _check_host(ctx: _Context, host: DhcpHost, loc: str) -> Iterator[FieldError]:
    yield from _in_guest(ctx, host.ip, f"{loc}.ip")
    if host.hostname.lower() in RESERVED_HOSTNAMES:
        yield FieldError(f"{loc}.hostname", f"{host.hostname!r} is the router's own name")


def _check_ingress(ctx: _Context, rule: IngressRule, loc: str) -> Iterator[FieldError]:
    yield from _public_known(ctx, rule.public_ip, f"{loc}.public_ip")
    if len(rule.source_cidrs) > 1:
        yield from _own_overlaps(_ingress_cidrs(rule), loc)


def _check_egress(ctx: _Context, rule: EgressRule, loc: str) -> Iterator[FieldError]:
    for k, cidr in enumerate(rule.source_cidrs):
        if not addr.subnet_of(cidr, ctx.guest_cidr):
            yield FieldError(
                f"{loc}.source_cidrs.{k}",
                f"{cidr} is not inside the guest network {ctx.guest_cidr}",
            )
    yield from _own_overlaps(_egress_cidrs(rule, ctx.guest_cidr), loc)


def _check_forward(ctx: _Context, pf: PortForward, loc: str) -> Iterator[FieldError]:
    yield from _public_known(ctx, pf.public_ip, f"{loc}.public_ip")
    if pf.public_ip in ctx.static_publics:
        yield FieldError(f"{loc}.public_ip", f"{pf.public_ip} is used for static NAT")
    yield from _in_guest(ctx, pf.guest_ip, f"{loc}.guest_ip")
    if len(pf.source_cidrs) > 1:
        clash = _cidr_clash([(c,) for c in pf.source_cidrs], [(c,) for c in pf.source_cidrs], True)
        if clash:
            yield FieldError(f"{loc}.source_cidrs", f"entries overlap ({clash})")


def _expanded_ports(pf: PortForward) -> int:
    """Ports a forward costs in the hash map when its ranges are shifted."""
    start, end = pf.public_range
    return end - start + 1 if end > start and start != pf.guest_start else 0


# ---------------------------------------------------------------- cross-item checks


def _duplicates(items: Iterable[tuple[str, Any]], what: str) -> Iterator[FieldError]:
    seen: dict[Any, str] = {}
    for loc, key in items:
        if key in seen:
            yield FieldError(loc, f"{what} as {seen[key]}")
        else:
            seen[key] = loc


def _record_key(record: DnsRecord) -> tuple[str, str]:
    return record.name.lower(), record.ip


def _match_range(rule) -> tuple[tuple[int, int], ...]:
    """What a rule matches besides addresses, as ranges: ports, or ICMP type and code."""
    if rule.protocol in ("tcp", "udp"):
        return (rule.port_range,)
    if rule.protocol == "icmp":
        t = (0, 255) if rule.icmp_type in (None, -1) else (rule.icmp_type, rule.icmp_type)
        c = (0, 255) if rule.icmp_code in (None, -1) else (rule.icmp_code, rule.icmp_code)
        return (t, c)
    return ((0, 0),)


def _ingress_key(rule: IngressRule) -> tuple:
    return (rule.public_ip, rule.protocol)


def _ingress_cidrs(rule: IngressRule) -> list[tuple[str, ...]]:
    return [(c,) for c in rule.source_cidrs]


def _egress_key(rule: EgressRule) -> tuple:
    return (rule.protocol,)


def _egress_cidrs(rule: EgressRule, guest_cidr: str) -> list[tuple[str, ...]]:
    return [(s, d) for s in rule.source_cidrs or [guest_cidr] for d in rule.destination_cidrs]


def _overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b, strict=True))


def _rules_clash(a, b, cidrs: Callable) -> str | None:
    if not _overlap(_match_range(a), _match_range(b)):
        return None
    return _cidr_clash(cidrs(a), cidrs(b))


def _conflicts(where: str, rules: list, key: Callable, cidrs: Callable) -> Iterator[FieldError]:
    """Rules that match the same packets conflict (CloudStack refuses them too), and the
    kernel's interval sets refuse overlapping elements. A sweep by range start keeps
    the usual case (distinct ports) at O(n log n)."""
    groups: dict[tuple, list] = defaultdict(list)
    for n, rule in enumerate(rules):
        groups[key(rule)].append((_match_range(rule), n, rule))
    for items in groups.values():
        items.sort(key=lambda item: item[0][0][0])
        active: list = []
        for match, n, rule in items:
            active = [a for a in active if a[0][0][1] >= match[0][0]]
            for _other_match, m, other in active:
                clash = _rules_clash(rule, other, cidrs)
                if clash:
                    yield FieldError(f"{where}.{n}", f"overlaps {where}.{m} ({clash})")
                    break
            active.append((match, n, rule))


def _cidr_clash(a: list[tuple], b: list[tuple], same: bool = False) -> str | None:
    """Describe the first pair of CIDR tuples (one from each list) that overlap."""
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if same and j <= i:
                continue
            if all(
                p == ANY_V4 or q == ANY_V4 or addr.overlaps(p, q) for p, q in zip(x, y, strict=True)
            ):
                return " and ".join(" -> ".join(t) for t in (x, y))
    return None


# ---------------------------------------------------------------- sections


def _interfaces(doc: RouterDocument) -> Iterator[FieldError]:
    by_role: dict[str, list[int]] = defaultdict(list)
    for n, iface in enumerate(doc.interfaces):
        by_role[iface.role].append(n)
        if iface.gateway is not None:
            if iface.role != "public":
                yield FieldError(
                    f"interfaces.{n}.gateway", "only the public interface has a gateway"
                )
            elif not any(addr.contains(str(a.network), iface.gateway) for a in iface.addresses):
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
        ((f"interfaces.{n}.name", i.name) for n, i in enumerate(doc.interfaces)), "the same name"
    )
    yield from _duplicates(
        ((f"interfaces.{n}.mac", i.mac) for n, i in enumerate(doc.interfaces) if i.mac),
        "the same MAC",
    )
    nets = [
        (str(a.network), n, f"interfaces.{n}.addresses.{k}")
        for n, iface in enumerate(doc.interfaces)
        for k, a in enumerate(iface.addresses)
    ]
    for i, (net, n, loc) in enumerate(nets):
        for other, m, other_loc in nets[:i]:
            if m != n and addr.overlaps(net, other):
                yield FieldError(loc, f"{net} overlaps {other} of {other_loc}")


def _guest_network(doc: RouterDocument) -> Iterator[FieldError]:
    gn = doc.guest_network
    first, last = addr.net_range(gn.cidr)
    prefix = int(gn.cidr.split("/")[1])
    if prefix > 30:
        yield FieldError("guest_network.cidr", f"{gn.cidr} is too small for guests (/30 at most)")
    if not first < addr.ip_int(gn.gateway) < last:
        yield FieldError(
            "guest_network.gateway", f"{gn.gateway} is not a host address in {gn.cidr}"
        )
    guest_if = doc.interface("guest")
    if guest_if is not None:
        wanted = ipaddress.IPv4Interface(f"{gn.gateway}/{prefix}")
        if wanted not in guest_if.addresses:
            n = doc.interfaces.index(guest_if)
            yield FieldError(
                f"interfaces.{n}.addresses",
                f"the guest interface must carry the gateway address {wanted}",
            )
    for n, route in enumerate(gn.classless_routes):
        if not addr.contains(gn.cidr, route.gateway):
            yield FieldError(
                f"guest_network.classless_routes.{n}.gateway",
                f"{route.gateway} is not in the guest network {gn.cidr}",
            )
        elif why := _bad_next_hop(gn.cidr, route.gateway, {gn.gateway}):
            yield FieldError(f"guest_network.classless_routes.{n}.gateway", why)
        if route.destination == ANY_V4:
            yield FieldError(
                f"guest_network.classless_routes.{n}.destination",
                "the default route is the gateway's job; do not list 0.0.0.0/0",
            )
    yield from _duplicates(
        (
            (f"guest_network.classless_routes.{n}.destination", r.destination)
            for n, r in enumerate(gn.classless_routes)
        ),
        "the same destination",
    )


def _public_ips(doc: RouterDocument, public_nets: list[str]) -> Iterator[FieldError]:
    if doc.public_ips and not public_nets:
        yield FieldError("public_ips", "public IPs need an interface with role public")
    snat = [n for n, p in enumerate(doc.public_ips) if p.source_nat]
    for n in snat[1:]:
        yield FieldError(
            f"public_ips.{n}.source_nat", "only one public IP can be the source NAT IP"
        )
    for n, pub in enumerate(doc.public_ips):
        if public_nets and not any(addr.contains(net, pub.ip) for net in public_nets):
            yield FieldError(
                f"public_ips.{n}.ip", f"{pub.ip} is not in a subnet of the public interface"
            )
    yield from _duplicates(
        ((f"public_ips.{n}.ip", p.ip) for n, p in enumerate(doc.public_ips)), "the same address"
    )


def _port_forwards(ctx: _Context, doc: RouterDocument) -> Iterator[FieldError]:
    expanded = 0
    by_key: dict[tuple, list[tuple[int, int, int]]] = defaultdict(list)
    for n, pf in enumerate(doc.port_forwards):
        yield from _check_forward(ctx, pf, f"port_forwards.{n}")
        expanded += _expanded_ports(pf)
        start, end = pf.public_range
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


def _static_nats(ctx: _Context, doc: RouterDocument) -> Iterator[FieldError]:
    for n, sn in enumerate(doc.static_nats):
        yield from _public_known(ctx, sn.public_ip, f"static_nats.{n}.public_ip")
        if sn.public_ip == ctx.source_nat_ip:
            yield FieldError(f"static_nats.{n}.public_ip", f"{sn.public_ip} is the source NAT IP")
        yield from _in_guest(ctx, sn.guest_ip, f"static_nats.{n}.guest_ip")
    items = list(enumerate(doc.static_nats))
    yield from _duplicates(
        ((f"static_nats.{n}.public_ip", s.public_ip) for n, s in items), "the same public IP"
    )
    yield from _duplicates(
        ((f"static_nats.{n}.guest_ip", s.guest_ip) for n, s in items), "the same guest IP"
    )


def _static_routes(doc: RouterDocument, public_nets: list[str]) -> Iterator[FieldError]:
    connected = [doc.guest_network.cidr, *public_nets]
    own = {str(a.ip) for i in doc.interfaces for a in i.addresses}
    own |= {p.ip for p in doc.public_ips}
    for n, route in enumerate(doc.static_routes):
        net = next((c for c in connected if addr.contains(c, route.gateway)), None)
        if net is None:
            yield FieldError(
                f"static_routes.{n}.gateway",
                f"{route.gateway} is not on a directly connected network (guest or public)",
            )
        elif why := _bad_next_hop(net, route.gateway, own):
            yield FieldError(f"static_routes.{n}.gateway", why)
        if addr.overlaps(route.cidr, doc.guest_network.cidr):
            yield FieldError(f"static_routes.{n}.cidr", f"{route.cidr} overlaps the guest network")
        if route.cidr == ANY_V4:
            yield FieldError(
                f"static_routes.{n}.cidr", "the default route comes from the public gateway"
            )
    yield from _duplicates(
        ((f"static_routes.{n}.cidr", r.cidr) for n, r in enumerate(doc.static_routes)),
        "the same destination",
    )


# ---------------------------------------------------------------- incremental path


def still_valid(prev: RouterDocument, doc: RouterDocument) -> bool:
    """True when ``doc`` is certainly valid, knowing ``prev`` was.

    Only added items can break a valid document while the rest stays put, so
    if every section that others depend on is unchanged, checking the added
    items (against each other and the rest) is enough. Removing items never
    creates a conflict. Any doubt answers False.
    """
    if (
        doc.interfaces != prev.interfaces
        or doc.guest_network != prev.guest_network
        or doc.public_ips != prev.public_ips
        or doc.static_nats != prev.static_nats
        or doc.static_routes != prev.static_routes
        # The service sections are verified whole (they are small next to the lists).
        or doc.load_balancers != prev.load_balancers
        or doc.vpn != prev.vpn
        or doc.guest_data != prev.guest_data
        or doc.redundancy != prev.redundancy
    ):
        return False
    ctx = _Context.of(doc)
    sections = (
        ("port_forwards", prev.port_forwards, doc.port_forwards, _forward_ok),
        ("ingress_rules", prev.ingress_rules, doc.ingress_rules, _ingress_ok),
        ("egress_rules", prev.egress.rules, doc.egress.rules, _egress_ok),
        ("dhcp_hosts", prev.dhcp_hosts, doc.dhcp_hosts, _host_ok),
        ("dns_records", prev.dns_records, doc.dns_records, _record_ok),
    )
    for name, old, new, ok in sections:
        if old is new:
            continue
        added, _removed = derivation.changes(prev, doc, name, old, new)
        if len(added) > INCREMENTAL_LIMIT:
            return False
        # Run ok() even with nothing added: it checks the section's keys are unique,
        # which also catches the same unchanged item listed twice (with another one
        # dropped, that adds nothing and removes nothing the parser could see).
        if not ok(ctx, added, new):
            return False
    return True


def _unique(values: list) -> bool:
    return len(set(values)) == len(values)


def _forward_ok(ctx: _Context, added: list[PortForward], new: list[PortForward]) -> bool:
    if any(next(_check_forward(ctx, pf, ""), None) for pf in added):
        return False
    if any(_expanded_ports(pf) for pf in added):
        return False  # the cap is global: let the full check count
    if not _unique(list(map(attrgetter("id"), new))):
        return False
    ips = {pf.public_ip for pf in added}
    for pf in [pf for pf in new if pf.public_ip in ips]:
        start, end = pf.public_range
        for a in added:
            if a is not pf and a.public_ip == pf.public_ip and a.protocol == pf.protocol:
                a_start, a_end = a.public_range
                if a_start <= end and start <= a_end:
                    return False
    return True


def _rule_section_ok(
    added: list, new: list, key: Callable, cidrs: Callable, ids_checked: bool = False
) -> bool:
    if not ids_checked and not _unique(list(map(attrgetter("id"), new))):
        return False
    protocols = {r.protocol for r in added}
    for rule in [r for r in new if r.protocol in protocols]:
        for a in added:
            if a is not rule and key(a) == key(rule) and _rules_clash(a, rule, cidrs):
                return False
    return True


def _ingress_ok(ctx: _Context, added: list[IngressRule], new: list[IngressRule]) -> bool:
    if any(next(_check_ingress(ctx, r, ""), None) for r in added):
        return False
    if not _unique(list(map(attrgetter("id"), new))):
        return False
    ips = {r.public_ip for r in added}
    return _rule_section_ok(
        added,
        [r for r in new if r.public_ip in ips],
        _ingress_key,
        _ingress_cidrs,
        ids_checked=True,
    )


def _egress_ok(ctx: _Context, added: list[EgressRule], new: list[EgressRule]) -> bool:
    if any(next(_check_egress(ctx, r, ""), None) for r in added):
        return False
    return _rule_section_ok(added, new, _egress_key, lambda r: _egress_cidrs(r, ctx.guest_cidr))


def _host_ok(ctx: _Context, added: list[DhcpHost], new: list[DhcpHost]) -> bool:
    if any(next(_check_host(ctx, h, ""), None) for h in added):
        return False
    return (
        _unique(list(map(attrgetter("mac"), new)))
        and _unique(list(map(attrgetter("ip"), new)))
        and _unique([h.hostname.lower() for h in new])
    )


def _record_ok(ctx: _Context, added: list[DnsRecord], new: list[DnsRecord]) -> bool:
    return _unique([_record_key(r) for r in new])
