"""Hypothesis strategies that build VALID router documents by construction.

Nothing here is filtered after the fact: every cross-field rule of verify.py is
satisfied while drawing (addresses are drawn inside the right networks, rules
that would overlap are dropped greedily), so almost no example is wasted.

A document is a *frame* (what fixes the nftables ruleset's shape: router id,
interfaces, guest network, source NAT IP, egress policy) plus *contents* (set
and map elements, DHCP hosts, ...). A later version of a document keeps the
frame and mixes the first document's items with another contents' items:
what the agent's incremental parser and element deltas are for.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

# --- scalars -------------------------------------------------------------------

LABEL_RE = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"

safe_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
if_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", fullmatch=True)
labels = st.one_of(
    st.from_regex(LABEL_RE, fullmatch=True),
    st.integers(1, 63).map(lambda n: "h" * n),  # long labels, which regexes rarely reach
)
# dnsmasq reads all-digit names (with an optional s/m/h/d/w) as lease times, and
# "router" is the router's own name: the document refuses those.
hostnames = labels.filter(
    lambda h: not re.fullmatch(r"[0-9]+[smhdwSMHDW]?|ignore|infinite|router", h, re.I)
)
domains = (
    st.lists(labels, min_size=1, max_size=4).map(".".join).filter(lambda d: len(d) <= 253)
)


@st.composite
def macs(draw) -> str:
    raw = bytearray(draw(st.binary(min_size=6, max_size=6)))
    raw[0] &= 0xFE  # unicast
    if not any(raw):
        raw[5] = 1
    text = ":".join(f"{b:02x}" for b in raw)
    return text.upper() if draw(st.booleans()) else text


#: Any unicast host address (1.0.0.0 .. 223.255.255.255).
unicast_ips = st.integers(1 << 24, (224 << 24) - 1).map(lambda n: str(IPv4Address(n)))


def any_network(min_prefix: int = 0, max_prefix: int = 32):
    return st.builds(
        lambda addr, prefix: IPv4Network((addr, prefix), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(min_prefix, max_prefix),
    )


def subnet_of(net: IPv4Network):
    return st.builds(
        lambda off, prefix: IPv4Network((int(net.network_address) + off, prefix), strict=False),
        st.integers(0, net.num_addresses - 1),
        st.integers(net.prefixlen, 32),
    )


def disjoint(nets: list[IPv4Network]) -> list[IPv4Network]:
    """Greedily keep networks that overlap none kept before."""
    kept: list[IPv4Network] = []
    for net in nets:
        if not any(net.overlaps(k) for k in kept):
            kept.append(net)
    return kept


def cidr_lists(nets, max_size: int = 3):
    return st.lists(nets, min_size=1, max_size=max_size).map(disjoint)


def host(net: IPv4Network, offset: int) -> str:
    return str(net.network_address + offset)


# --- frame ---------------------------------------------------------------------


@dataclass
class Frame:
    router_id: str
    guest: IPv4Network
    gateway_offset: int
    guest_if: dict
    public_if: dict | None
    control_if: dict | None
    public_subnets: list[IPv4Network]
    source_nat_ip: str | None
    egress_policy: str
    domain: str
    extra: dict = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return host(self.guest, self.gateway_offset)

    def interfaces(self) -> list[dict]:
        return [i for i in (self.control_if, self.guest_if, self.public_if) if i is not None]


@st.composite
def frames(draw) -> Frame:
    prefix = draw(st.integers(16, 29))
    guest = IPv4Network(((10 << 24) | draw(st.integers(0, 2**24 - 1)), prefix), strict=False)
    gw_off = draw(st.integers(1, guest.num_addresses - 2))
    names = draw(st.lists(if_names, min_size=3, max_size=3, unique=True))
    if_macs = draw(st.lists(macs(), min_size=3, max_size=3, unique_by=str.lower))
    with_mac = draw(st.lists(st.booleans(), min_size=3, max_size=3))

    def iface(n: int, role: str, addresses: list[str], **extra) -> dict:
        data = {"role": role, "name": names[n], "addresses": addresses, **extra}
        if with_mac[n]:
            data["mac"] = if_macs[n]
        if draw(st.booleans()):
            data["mtu"] = draw(st.integers(576, 9216))
        return data

    guest_if = iface(1, "guest", [f"{host(guest, gw_off)}/{prefix}"])
    control_if = iface(0, "control", ["169.254.0.2/16"]) if draw(st.booleans()) else None
    public_if, subnets, snat = None, [], None
    if draw(st.booleans()):
        # Public subnets inside 198.18.0.0/15: never overlapping guest (10/8) or control.
        blocks = draw(st.lists(st.integers(0, 511), min_size=1, max_size=2, unique=True))
        subnets = [
            IPv4Network((0xC6120000 + b * 256, draw(st.integers(24, 29)))) for b in blocks
        ]
        extra = {}
        if draw(st.booleans()):
            net = draw(st.sampled_from(subnets))
            extra["gateway"] = host(net, draw(st.integers(1, net.num_addresses - 2)))
        public_if = iface(2, "public", [f"{host(n, 1)}/{n.prefixlen}" for n in subnets], **extra)
        if draw(st.booleans()):
            net = subnets[0]
            snat = host(net, draw(st.integers(1, net.num_addresses - 2)))
    return Frame(
        router_id=draw(safe_ids),
        guest=guest,
        gateway_offset=gw_off,
        guest_if=guest_if,
        public_if=public_if,
        control_if=control_if,
        public_subnets=subnets,
        source_nat_ip=snat,
        egress_policy=draw(st.sampled_from(["allow", "deny"])),
        domain=draw(domains),
    )


# --- rule matching (an independent re-statement of what "overlap" means) -----


def match_of(rule: dict) -> tuple[tuple[int, int], ...]:
    proto = rule["protocol"]
    if proto in ("tcp", "udp"):
        start = rule["start_port"]
        return ((start, rule.get("end_port") or start),)
    if proto == "icmp":
        t, c = rule.get("icmp_type"), rule.get("icmp_code")
        tr = (0, 255) if t in (None, -1) else (t, t)
        cr = (0, 255) if c in (None, -1) else (c, c)
        return (tr, cr)
    return ((0, 0),)


def ranges_overlap(a, b) -> bool:
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b, strict=True))


def tuples_clash(a: list[tuple], b: list[tuple]) -> bool:
    return any(all(p.overlaps(q) for p, q in zip(x, y, strict=True)) for x in a for y in b)


@st.composite
def port_match(draw, protocols=("tcp", "udp", "icmp", "all")) -> dict:
    proto = draw(st.sampled_from(protocols))
    rule: dict[str, Any] = {"protocol": proto}
    if proto in ("tcp", "udp"):
        start = draw(st.integers(1, 65535))
        rule["start_port"] = start
        kind = draw(st.sampled_from(["single", "same", "range"]))
        if kind == "same":
            rule["end_port"] = start
        elif kind == "range":
            rule["end_port"] = draw(st.integers(start, min(65535, start + 2000)))
    elif proto == "icmp":
        icmp_type = draw(st.sampled_from([None, -1, 0, 3, 8, 11]) | st.integers(0, 255))
        if icmp_type is not None:
            rule["icmp_type"] = icmp_type
        codes = [None, -1] if icmp_type in (None, -1) else [None, -1, 0, 1, 255]
        icmp_code = draw(st.sampled_from(codes))
        if icmp_code is not None:
            rule["icmp_code"] = icmp_code
    return rule


# --- contents ------------------------------------------------------------------


@st.composite
def contents(draw, frame: Frame) -> dict:
    guest, size = frame.guest, frame.guest.num_addresses
    # Guest host offsets: never the network, broadcast or gateway address.
    host_offsets = st.integers(1, size - 2).filter(lambda o: o != frame.gateway_offset)
    guest_hosts = host_offsets.map(lambda o: host(guest, o))
    doc: dict[str, Any] = {}

    # Guest network extras.
    gn: dict[str, Any] = {}
    if draw(st.booleans()):
        gn["dns_servers"] = draw(st.lists(unicast_ips, max_size=3))
    if draw(st.booleans()):
        gn["upstream_resolvers"] = draw(st.lists(unicast_ips, max_size=3))
    routes = draw(st.lists(st.tuples(any_network(1, 32), guest_hosts), max_size=3,
                           unique_by=lambda r: r[0]))
    if routes:
        gn["classless_routes"] = [{"destination": str(d), "gateway": g} for d, g in routes]
    lease = draw(st.none() | st.integers(120, 31_536_000))
    if lease is not None:
        gn["lease_seconds"] = lease
    doc["guest_network"] = gn

    # DHCP hosts and DNS records.
    n_hosts = draw(st.integers(0, min(8, (size - 3) // 2)))
    offsets = draw(st.lists(host_offsets, min_size=n_hosts, max_size=n_hosts, unique=True))
    names = draw(st.lists(hostnames, min_size=n_hosts, max_size=n_hosts, unique_by=str.lower))
    host_macs = draw(st.lists(macs(), min_size=n_hosts, max_size=n_hosts, unique_by=str.lower))
    doc["dhcp_hosts"] = [
        {"mac": m, "ip": host(guest, o), "hostname": h, "default_gateway": draw(st.booleans())}
        for o, h, m in zip(offsets, names, host_macs, strict=True)
    ]
    records = draw(st.lists(st.tuples(domains, unicast_ips), max_size=3,
                            unique_by=lambda r: (r[0].lower(), r[1])))
    doc["dns_records"] = [{"name": n, "ip": ip} for n, ip in records]

    # Public IPs: the frame's source NAT IP plus distinct addresses of the public subnets.
    public_ips: list[str] = []
    if frame.public_subnets:
        pubs = draw(st.lists(
            st.sampled_from(frame.public_subnets).flatmap(
                lambda n: st.integers(1, n.num_addresses - 2).map(lambda o, n=n: host(n, o))
            ),
            max_size=6, unique=True,
        ))
        public_ips = [p for p in pubs if p != frame.source_nat_ip]
        if frame.source_nat_ip:
            public_ips.insert(draw(st.integers(0, len(public_ips))), frame.source_nat_ip)
    doc["public_ips"] = [
        {"ip": ip, "source_nat": True} if ip == frame.source_nat_ip else {"ip": ip}
        for ip in public_ips
    ]

    # Static NAT on some public IPs other than the source NAT IP.
    candidates = [ip for ip in public_ips if ip != frame.source_nat_ip]
    nat_pubs = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=2)) \
        if candidates else []
    nat_guests = draw(st.lists(guest_hosts, min_size=len(nat_pubs), max_size=len(nat_pubs),
                               unique=True))
    doc["static_nats"] = [{"public_ip": p, "guest_ip": g}
                          for p, g in zip(nat_pubs, nat_guests, strict=True)]

    id_prefix = draw(safe_ids)
    doc["port_forwards"] = draw(forwards(
        [ip for ip in public_ips if ip not in nat_pubs], guest_hosts, id_prefix + "-pf"))
    doc["ingress_rules"] = draw(ingress_rules(public_ips, id_prefix + "-in"))
    doc["egress"] = {"default_policy": frame.egress_policy,
                     "rules": draw(egress_rules(guest, id_prefix + "-eg"))}

    # Static routes: not overlapping the guest network, via a connected address.
    connected = [guest_hosts] + [
        st.integers(1, n.num_addresses - 2).map(lambda o, n=n: host(n, o))
        for n in frame.public_subnets
    ]
    route_nets = [n for n in draw(st.lists(any_network(1, 32), max_size=3, unique=True))
                  if not n.overlaps(guest)]
    own = {ip for ip in public_ips} | {
        a.split("/")[0] for i in frame.interfaces() for a in i["addresses"]
    }
    routes = [{"cidr": str(n), "gateway": draw(st.one_of(connected))} for n in route_nets]
    doc["static_routes"] = [r for r in routes if r["gateway"] not in own]
    return doc


@st.composite
def forwards(draw, public_ips: list[str], guest_hosts, id_prefix: str) -> list[dict]:
    if not public_ips:
        return []
    out: list[dict] = []
    taken: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for n in range(draw(st.integers(0, 8))):
        ip = draw(st.sampled_from(public_ips))
        proto = draw(st.sampled_from(["tcp", "udp"]))
        kind = draw(st.sampled_from(["single", "equal", "shifted", "shifted_explicit"]))
        length = 0 if kind == "single" else draw(st.integers(1, 40))
        start = draw(st.integers(1, 65535 - length))
        end = start + length
        if any(start <= e and s <= end for s, e in taken.get((ip, proto), [])):
            continue
        taken.setdefault((ip, proto), []).append((start, end))
        pf: dict[str, Any] = {"id": f"{id_prefix}{n}", "public_ip": ip, "protocol": proto,
                              "public_start": start, "guest_ip": draw(guest_hosts)}
        if kind != "single" or draw(st.booleans()):
            pf["public_end"] = end
        if kind == "equal":
            pf["guest_start"] = start
        else:
            pf["guest_start"] = draw(st.integers(1, 65535 - length))
        if kind == "shifted_explicit":
            pf["guest_end"] = pf["guest_start"] + length
        if draw(st.booleans()):
            pf["source_cidrs"] = [str(c) for c in draw(cidr_lists(any_network(0, 32)))]
        out.append(pf)
    return out


@st.composite
def ingress_rules(draw, public_ips: list[str], id_prefix: str) -> list[dict]:
    if not public_ips:
        return []
    out: list[dict] = []
    for n in range(draw(st.integers(0, 10))):
        rule = {"id": f"{id_prefix}{n}", "public_ip": draw(st.sampled_from(public_ips)),
                **draw(port_match())}
        sources = None
        if draw(st.booleans()):
            sources = draw(cidr_lists(any_network(0, 32)))
            rule["source_cidrs"] = [str(c) for c in sources]
        tuples = [(c,) for c in (sources or [IPv4Network("0.0.0.0/0")])]
        clash = any(
            (o["public_ip"], o["protocol"]) == (rule["public_ip"], rule["protocol"])
            and ranges_overlap(match_of(o), match_of(rule))
            and tuples_clash(ot, tuples)
            for o, ot in out
        )
        if not clash:
            out.append((rule, tuples))
    return [r for r, _ in out]


@st.composite
def egress_rules(draw, guest: IPv4Network, id_prefix: str) -> list[dict]:
    out: list[tuple[dict, list[tuple]]] = []
    for n in range(draw(st.integers(0, 10))):
        rule = {"id": f"{id_prefix}{n}", **draw(port_match())}
        sources = draw(st.just([]) | cidr_lists(subnet_of(guest)))
        if sources:
            rule["source_cidrs"] = [str(c) for c in sources]
        dests = [IPv4Network("0.0.0.0/0")]
        if draw(st.booleans()):
            dests = draw(cidr_lists(any_network(0, 32)))
            rule["destination_cidrs"] = [str(c) for c in dests]
        tuples = [(s, d) for s in sources or [guest] for d in dests]
        clash = any(
            o["protocol"] == rule["protocol"]
            and ranges_overlap(match_of(o), match_of(rule))
            and tuples_clash(ot, tuples)
            for o, ot in out
        )
        if not clash:
            out.append((rule, tuples))
    return [r for r, _ in out]


# --- documents -----------------------------------------------------------------


def assemble(frame: Frame, body: dict, generation: int) -> dict:
    return {
        "router_id": frame.router_id,
        "generation": generation,
        "interfaces": frame.interfaces(),
        "guest_network": {"cidr": str(frame.guest), "gateway": frame.gateway,
                          "domain": frame.domain, **body["guest_network"]},
        **{k: v for k, v in body.items() if k != "guest_network"},
    }


@st.composite
def documents(draw) -> dict:
    """One valid router document (raw JSON data)."""
    frame = draw(frames())
    return assemble(frame, draw(contents(frame)), draw(st.integers(0, 2**40)))



# --- a document and a later version of it ----------------------------------------

#: List sections a later version may change item by item: (path, holder key).
ITEM_SECTIONS = ["port_forwards", "ingress_rules", "egress.rules", "dhcp_hosts",
                 "dns_records", "static_routes"]


def get_section(doc: dict, path: str) -> list:
    if path == "egress.rules":
        return doc["egress"]["rules"]
    return doc.get(path, [])


def set_section(doc: dict, path: str, items: list) -> None:
    if path == "egress.rules":
        doc["egress"] = {**doc["egress"], "rules": items}
    else:
        doc[path] = items


@st.composite
def mixed_lists(draw, old: list, other: list) -> list:
    """Some of ``old``'s items (equal dicts), some of ``other``'s, in a random order."""
    kept = [item for item in old if draw(st.integers(0, 3))]  # mostly kept
    fresh = draw(st.lists(st.sampled_from(other), unique_by=id, max_size=len(other))) \
        if other else []
    out = kept + [dict(item) for item in fresh]
    if kept and draw(st.integers(0, 9)) == 0:  # an unchanged item listed twice
        out.append(dict(draw(st.sampled_from(kept))))
    return draw(st.permutations(out)) if draw(st.booleans()) else out


@st.composite
def later_versions(draw) -> tuple[dict, dict]:
    """(A, B): A valid; B is A with items removed and items of another valid document
    of the same frame added. B may be invalid (duplicates, overlaps, unknown IPs)."""
    frame = draw(frames())
    a = assemble(frame, draw(contents(frame)), draw(st.integers(0, 1000)))
    c = assemble(frame, draw(contents(frame)), a["generation"] + 1)
    b = {key: value for key, value in a.items()}
    b["generation"] = c["generation"]
    for path in ITEM_SECTIONS:
        set_section(b, path, draw(mixed_lists(get_section(a, path), get_section(c, path))))
    if draw(st.integers(0, 4)) == 0:  # now and then the public side changes too
        b["public_ips"], b["static_nats"] = c["public_ips"], c["static_nats"]
    return a, b


def repair(data: dict, parse) -> dict:
    """Drop the items a DocumentError blames until ``parse`` accepts the document."""
    from appliances.common.errors import DocumentError

    data = {**data, "egress": dict(data["egress"])}
    for _ in range(50):
        try:
            parse(data)
            return data
        except DocumentError as exc:
            blamed: dict[str, set[int]] = {}
            for err in exc.errors:
                parts = err.loc.split(".")
                path = "egress.rules" if parts[0] == "egress" else parts[0]
                index = parts[2] if parts[0] == "egress" else (parts[1] if len(parts) > 1 else "")
                if path in ITEM_SECTIONS + ["static_nats"] and index.isdigit():
                    blamed.setdefault(path, set()).add(int(index))
                elif path == "port_forwards":  # the expansion cap: drop them all
                    blamed["port_forwards"] = set(range(len(data["port_forwards"])))
                else:
                    raise AssertionError(f"cannot repair {err}") from None
            for path, indexes in blamed.items():
                items = data.get(path, []) if path == "static_nats" else get_section(data, path)
                kept = [item for n, item in enumerate(items) if n not in indexes]
                if path == "static_nats":
                    data["static_nats"] = kept
                else:
                    set_section(data, path, kept)
    raise AssertionError("could not repair the document")
