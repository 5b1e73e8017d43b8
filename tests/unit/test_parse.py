"""The agent's parser: unchanged items are reused, and its fast path (verify.still_valid)
never accepts what the full verify refuses."""

from __future__ import annotations

import copy

import pytest
from router_docs import egress, forward, full, ingress

from appliances.common.errors import DocumentError
from appliances.router.parse import RouterParser
from appliances.router.verify import parse_document


def accepted(data: dict) -> tuple[RouterParser, object]:
    parser = RouterParser()
    doc = parser.parse(copy.deepcopy(data))
    parser.accept(data, doc)
    return parser, doc


def test_unchanged_items_are_the_same_objects():
    data = full()
    parser, old = accepted(data)
    new_data = copy.deepcopy(data)
    new_data["generation"] += 1
    new_data["port_forwards"].append(forward("pf-new", public_start=8080, guest_start=80))
    new = parser.parse(new_data)
    assert new.port_forwards[0] is old.port_forwards[0]
    assert new.port_forwards[1] is not None and len(new.port_forwards) == 2
    assert new.dhcp_hosts is old.dhcp_hosts or all(
        a is b for a, b in zip(new.dhcp_hosts, old.dhcp_hosts, strict=True))
    assert new.generation == old.generation + 1
    assert new == parse_document(new_data)


def _same_outcome(data: dict, later: dict) -> None:
    parser, _ = accepted(data)
    try:
        parse_document(copy.deepcopy(later))
        full_errors = None
    except DocumentError as exc:
        full_errors = sorted((e.loc, e.msg) for e in exc.errors)
    if full_errors is None:
        parser.parse(later)
        return
    with pytest.raises(DocumentError) as info:
        parser.parse(later)
    assert sorted((e.loc, e.msg) for e in info.value.errors) == full_errors


@pytest.mark.parametrize(
    "change",
    [
        # Added items that clash with kept ones: the fast path must not wave them through.
        lambda d: d["port_forwards"].append(forward("pf-ssh", public_start=9000)),
        lambda d: d["port_forwards"].append(forward("pf-x", public_start=2222, guest_start=1)),
        lambda d: d["port_forwards"].append(forward("pf-x", public_ip="203.0.113.12")),
        lambda d: d["port_forwards"].append(forward("pf-x", public_start=1, public_end=40_000,
                                                    guest_start=2, protocol="udp")),
        lambda d: d["ingress_rules"].append(ingress("in-x", start_port=20, end_port=25,
                                                    source_cidrs=["192.0.2.128/25"])),
        lambda d: d["ingress_rules"].append(ingress("in-ssh", start_port=23)),
        lambda d: d["egress"]["rules"].append(egress("eg-x", start_port=100)),
        lambda d: d["dhcp_hosts"].append({"mac": "02:00:00:00:00:10", "ip": "10.1.1.50",
                                          "hostname": "x"}),
        lambda d: d["dhcp_hosts"].append({"mac": "02:00:00:00:00:50", "ip": "10.1.1.50",
                                          "hostname": "WEB1"}),
        lambda d: d["dhcp_hosts"].append(dict(d["dhcp_hosts"][0])),  # listed twice
        lambda d: d["dns_records"].append(dict(d["dns_records"][0])),
        # Valid additions.
        lambda d: d["port_forwards"].append(forward("pf-x", public_start=2223, guest_start=22)),
        lambda d: d["dhcp_hosts"].append({"mac": "02:00:00:00:00:50", "ip": "10.1.1.50",
                                          "hostname": "web3"}),
        # Removals and a structural error inside a reused section.
        lambda d: d["port_forwards"].clear(),
        lambda d: d["port_forwards"].append({"id": "bad id", "public_ip": "x"}),
        lambda d: d["dhcp_hosts"][0].update(hostname="bad host"),
    ],
)
def test_fast_path_agrees_with_full_verify(change):
    data = full()
    later = copy.deepcopy(data)
    change(later)
    _same_outcome(data, later)


@pytest.mark.parametrize("junk", [None, [], "doc", {"router_id": 1}])
def test_parser_refuses_junk_with_document_error(junk):
    parser, _ = accepted(full())
    with pytest.raises(DocumentError):
        parser.parse(junk)
