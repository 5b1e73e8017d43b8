"""The fast path must never disagree with the slow one.

The agent's parser reuses validated items of the last accepted document and
verify.still_valid checks only what was added; the nftables delta is built
from the items the parser saw change. For random edits of a valid document
(additions, removals, duplicates, conflicting items, edits in place), this
checks that:

- the memoising parser accepts exactly the documents a fresh full parse accepts,
  and produces an equal document;
- applying the element delta to the old document's sets gives the new
  document's sets.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliances.common.errors import DocumentError
from appliances.router import nft_model
from appliances.router.parse import RouterParser
from appliances.router.verify import parse_document

PUBLICS = ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"]


def base_document(forwards: int = 12, rules: int = 12, hosts: int = 8) -> dict:
    return {
        "router_id": "r-prop",
        "generation": 1,
        "interfaces": [
            {"role": "guest", "name": "eth0", "addresses": ["10.1.0.1/24"]},
            {"role": "public", "name": "eth2", "addresses": ["203.0.113.10/24"],
             "gateway": "203.0.113.1"},
        ],
        "guest_network": {"cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "domain": "prop.test"},
        "public_ips": [{"ip": ip, "source_nat": ip == PUBLICS[0]} for ip in PUBLICS],
        "dhcp_hosts": [
            {"mac": f"52:54:00:00:01:{i:02x}", "ip": f"10.1.0.{10 + i}", "hostname": f"h{i}"}
            for i in range(hosts)
        ],
        "port_forwards": [
            {"id": f"pf{i}", "public_ip": PUBLICS[1 + i % 3], "protocol": "tcp",
             "public_start": 1000 + i, "guest_ip": f"10.1.0.{10 + i % hosts}", "guest_start": 80}
            for i in range(forwards)
        ],
        "ingress_rules": [
            {"id": f"fw{i}", "public_ip": PUBLICS[1 + i % 3], "protocol": "tcp",
             "start_port": 1000 + i}
            for i in range(rules)
        ],
        "static_nats": [],
        "dns_records": [{"name": "db.prop.test", "ip": "10.1.0.10"}],
    }


def _forward(draw) -> dict:
    start = draw(st.integers(995, 1015))
    end = draw(st.one_of(st.none(), st.integers(start, start + 3)))
    return {
        "id": draw(st.sampled_from([f"pf{i}" for i in range(16)] + ["new1", "new2"])),
        "public_ip": draw(st.sampled_from(PUBLICS[1:] + ["203.0.113.99"])),
        "protocol": draw(st.sampled_from(["tcp", "udp"])),
        "public_start": start,
        "public_end": end,
        "guest_ip": draw(st.sampled_from(["10.1.0.10", "10.1.0.11", "10.1.0.1", "10.9.9.9"])),
        "guest_start": draw(st.sampled_from([80, start])),
    }


def _rule(draw) -> dict:
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", "all"]))
    rule: dict[str, Any] = {
        "id": draw(st.sampled_from([f"fw{i}" for i in range(16)] + ["newr"])),
        "public_ip": draw(st.sampled_from(PUBLICS[1:])),
        "protocol": proto,
        "source_cidrs": draw(st.sampled_from(
            [["0.0.0.0/0"], ["198.51.100.0/24"], ["198.51.100.0/24", "198.51.100.128/25"]]
        )),
    }
    if proto in ("tcp", "udp"):
        rule["start_port"] = draw(st.integers(995, 1015))
        rule["end_port"] = rule["start_port"] + draw(st.integers(0, 2))
    return rule


def _host(draw) -> dict:
    i = draw(st.integers(0, 12))
    return {"mac": f"52:54:00:00:01:{i:02x}", "ip": f"10.1.0.{10 + draw(st.integers(0, 12))}",
            "hostname": f"h{draw(st.integers(0, 12))}"}


@st.composite
def edits(draw) -> list[tuple[str, str, Any]]:
    """A few (section, action, payload) edits."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["port_forwards", "ingress_rules", "dhcp_hosts",
                                        "public_ips", "static_nats"]))
        action = draw(st.sampled_from(["add", "remove", "duplicate", "replace"]))
        make = {"port_forwards": _forward, "ingress_rules": _rule, "dhcp_hosts": _host,
                "public_ips": lambda d: {"ip": d(st.sampled_from(PUBLICS + ["203.0.113.20"]))},
                "static_nats": lambda d: {"public_ip": d(st.sampled_from(PUBLICS)),
                                          "guest_ip": "10.1.0.11"}}[section]
        out.append((section, action, make(draw), draw(st.integers(0, 30))))
    return out


def apply_edits(doc: dict, todo) -> dict:
    doc = copy.deepcopy(doc)
    doc["generation"] += 1
    for section, action, payload, pick in todo:
        items = doc[section]
        if action == "add":
            items.append(payload)
        elif items and action == "remove":
            items.pop(pick % len(items))
        elif items and action == "duplicate":
            items.append(copy.deepcopy(items[pick % len(items)]))
        elif items and action == "replace":
            items[pick % len(items)] = payload
    return doc


def _outcome(parse, raw):
    try:
        return parse(raw)
    except DocumentError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits())
def test_memoised_parse_agrees_with_full_parse(todo):
    base = base_document()
    parser = RouterParser()
    first = parser.parse(copy.deepcopy(base))
    parser.accept(base, first)

    new = apply_edits(base, todo)
    fast = _outcome(parser.parse, copy.deepcopy(new))
    slow = _outcome(parse_document, copy.deepcopy(new))
    assert (fast is None) == (slow is None), f"fast={fast is not None} slow={slow is not None}"
    if fast is None:
        return
    assert fast == slow

    # The nftables delta from the parser's record equals the difference of the full plans.
    deletes, adds = nft_model.element_changes(first, fast)
    old = nft_model.plan(first, 8443).elements
    want = nft_model.plan(fast, 8443).elements
    got = {name: dict(items) for name, items in old.items()}
    for name, keys in deletes.items():
        for key in keys:
            del got[name][key]
    for name, items in adds.items():
        for key, value in items.items():
            assert key not in got[name], f"{name}: {key} added twice"
            got[name][key] = value
    assert got == want


def test_a_dropped_item_replaced_by_a_repeat_is_refused():
    """An unchanged item listed twice while another is dropped adds nothing new."""
    base = base_document()
    parser = RouterParser()
    parser.accept(base, parser.parse(copy.deepcopy(base)))
    new = copy.deepcopy(base)
    new["generation"] = 2
    new["port_forwards"][5] = copy.deepcopy(new["port_forwards"][4])
    assert _outcome(parser.parse, new) is None


def test_unchanged_items_are_the_same_objects():
    base = base_document()
    parser = RouterParser()
    first = parser.parse(copy.deepcopy(base))
    parser.accept(base, first)
    new = copy.deepcopy(base)
    new["generation"] = 2
    new["port_forwards"].append({"id": "extra", "public_ip": PUBLICS[1], "protocol": "udp",
                                 "public_start": 53, "guest_ip": "10.1.0.10", "guest_start": 53})
    second = parser.parse(new)
    assert all(a is b for a, b in zip(first.port_forwards, second.port_forwards, strict=False))
    assert second.ingress_rules is first.ingress_rules
    assert second.port_forwards[-1].id == "extra"
