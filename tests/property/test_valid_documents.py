"""Properties of valid documents that need no root: they parse, render, and diff sanely.

The lab-marked twin (test_render_lab.py) feeds the same documents to nft and dnsmasq.
"""

from __future__ import annotations

import copy
import ipaddress

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from router_strategies import documents, later_versions, repair

from appliances.common.errors import DocumentError
from appliances.router import nft_model, nft_render, verify
from appliances.router.document import ANY_V4, RouterDocument
from appliances.router.parse import RouterParser
from appliances.router.services import dnsmasq
from appliances.router.verify import parse_document

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _parse(data):
    try:
        return parse_document(data)
    except DocumentError as exc:  # pragma: no cover - a strategy bug, shown clearly
        raise AssertionError(f"generated document refused: {exc.errors}") from None


@FAST
@given(documents())
def test_generated_documents_are_valid_and_render(data):
    doc = _parse(data)
    plan = nft_model.plan(doc, 8443)
    text = nft_render.render_ruleset(plan)
    assert text.startswith(f"# Rendered by Skiff for router {doc.router_id}, generation ")
    files = dnsmasq.render(doc, "/var/lib/skiff/agent/dnsmasq")
    assert set(files) == {"dnsmasq.conf", "dhcp-hosts", "dhcp-opts", "hosts", "servers"}
    assert len(files["dhcp-hosts"].splitlines()) == len(doc.dhcp_hosts)
    assert len(files["servers"].splitlines()) == len(doc.guest_network.upstream_resolvers)
    assert nft_model.element_changes(doc, doc) == ({}, {})


@FAST
@given(documents())
def test_plan_elements_account_for_every_rule(data):
    doc = _parse(data)
    el = nft_model.plan(doc, 8443).elements
    assert set(el["public_ips"]) == {str(p.ip) for p in doc.public_ips}
    assert el["nat1to1_in"] == {str(s.public_ip): str(s.guest_ip) for s in doc.static_nats}
    # Each forwarded public port is in exactly one of the two DNAT maps.
    ports = sum(pf.public_range[1] - pf.public_range[0] + 1 for pf in doc.port_forwards)
    ranges = [k.rsplit(" . ", 1)[1].split("-") for k in el["pf_range"]]
    assert len(el["pf_port"]) + sum(int(b) - int(a) + 1 for a, b in ranges) == ports
    restricted = [pf for pf in doc.port_forwards if pf.source_cidrs != [ANY_V4]]
    assert len(el["pf_limited"]) == len(restricted)
    assert len(el["pf_limited_src"]) == sum(len(pf.source_cidrs) for pf in restricted)


def _parse_later(a: dict, b: dict):
    """(doc A, doc B) as the agent gets them: B parsed by a parser that accepted A."""
    parser = RouterParser()
    doc_a = parser.parse(copy.deepcopy(a))
    parser.accept(a, doc_a)
    return doc_a, parser, parser.parse(b)


def _outcome(parse, data):
    try:
        parse(data)
    except DocumentError as exc:
        return sorted((e.loc, e.msg) for e in exc.errors)
    return "valid"


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(later_versions())
def test_incremental_parse_agrees_with_full_verify(pair):
    """The parser's fast path (reused items, still_valid) accepts exactly what the
    full parse_document accepts, and reports the same errors otherwise."""
    a, b = pair
    parser = RouterParser()
    doc_a = parser.parse(copy.deepcopy(a))
    parser.accept(a, doc_a)
    full = _outcome(parse_document, copy.deepcopy(b))
    event(f"B is {'valid' if full == 'valid' else 'invalid'}")
    doc_b = RouterDocument.model_validate(copy.deepcopy(b))
    event(f"still_valid: {verify.still_valid(doc_a, doc_b)}")
    assert _outcome(parser.parse, b) == full


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(later_versions())
def test_element_delta_turns_first_plan_into_second(pair):
    """Applying the agent's delta (deletes, then adds) to A's elements gives B's exactly,
    with no delete of a missing element and no add over a present one."""
    a, b = pair[0], repair(pair[1], parse_document)
    doc_a, _parser, doc_b = _parse_later(a, b)
    assert nft_render.render_shape(nft_model.shape_context(doc_a, 8443)) == (
        nft_render.render_shape(nft_model.shape_context(doc_b, 8443)))
    deletes, adds = nft_model.element_changes(doc_a, doc_b)
    state = {name: dict(items) for name, items in nft_model.plan(doc_a, 8443).elements.items()}
    for name, keys in deletes.items():
        assert len(keys) == len(set(keys)), (name, keys)
        for key in keys:
            assert key in state[name], ("delete of a missing element", name, key)
            del state[name][key]
    for name, items in adds.items():
        for key, value in items.items():
            assert key not in state[name], ("add over a present element", name, key)
            state[name][key] = value
    assert state == nft_model.plan(doc_b, 8443).elements
    event(f"changed elements: {sum(map(len, deletes.values())) + sum(map(len, adds.values())) > 0}")


# --- verify's overlap sweep against brute force ----------------------------------

_PUBLIC = "203.0.113.10"
_small_cidrs = st.sampled_from(
    ["0.0.0.0/0", "192.0.2.0/24", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.7/32",
     "198.51.100.0/24", "10.0.0.0/8"]
)


def _overlap(a, b):
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b, strict=True))


def _base():
    return {
        "router_id": "r",
        "generation": 0,
        "interfaces": [
            {"role": "guest", "name": "eth1", "addresses": ["10.1.1.1/24"]},
            {"role": "public", "name": "eth2", "addresses": ["203.0.113.10/24"]},
        ],
        "guest_network": {"cidr": "10.1.1.0/24", "gateway": "10.1.1.1", "domain": "c"},
        "public_ips": [{"ip": _PUBLIC}, {"ip": "203.0.113.11"}],
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(
    st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 60), st.integers(0, 15),
              st.lists(_small_cidrs, min_size=1, max_size=2, unique=True)),
    max_size=8,
))
def test_ingress_overlap_reported_iff_brute_force_finds_one(rules):
    data = _base()
    data["ingress_rules"] = [
        {"id": f"r{n}", "public_ip": _PUBLIC, "protocol": p, "start_port": s,
         "end_port": s + w, "source_cidrs": cidrs}
        for n, (p, s, w, cidrs) in enumerate(rules)
    ]
    nets = [[ipaddress.ip_network(c) for c in r[3]] for r in rules]
    self_clash = {n for n, ns in enumerate(nets)
                  if any(x.overlaps(y) for i, x in enumerate(ns) for y in ns[i + 1:])}

    def clash(i: int, j: int) -> bool:
        (pi, si, wi, _), (pj, sj, wj, _) = rules[i], rules[j]
        return (pi == pj and si <= sj + wj and sj <= si + wi
                and any(x.overlaps(y) for x in nets[i] for y in nets[j]))

    any_pair = any(clash(i, j) for i in range(len(rules)) for j in range(i))
    try:
        parse_document(data)
        errors = []
    except DocumentError as exc:
        errors = exc.errors
    own = {e.loc for e in errors if "its own entries overlap" in e.msg}
    pairs = [e for e in errors if "overlaps ingress_rules." in e.msg]
    assert len(own) + len(pairs) == len(errors), errors
    assert own == {f"ingress_rules.{n}" for n in self_clash}
    assert bool(pairs) == any_pair
    for e in pairs:  # each blamed pair really overlaps
        n = int(e.loc.split(".")[1])
        m = int(e.msg.split("overlaps ingress_rules.")[1].split(" ")[0])
        assert clash(n, m), e


@settings(max_examples=200, deadline=None)
@given(st.lists(
    st.tuples(st.sampled_from(["tcp", "udp"]), st.sampled_from([_PUBLIC, "203.0.113.11"]),
              st.integers(1, 60), st.integers(0, 15)),
    max_size=8,
))
def test_forward_overlap_reported_iff_brute_force_finds_one(forwards):
    data = _base()
    data["port_forwards"] = [
        {"id": f"f{n}", "public_ip": ip, "protocol": p, "public_start": s, "public_end": s + w,
         "guest_ip": "10.1.1.10", "guest_start": s}
        for n, (p, ip, s, w) in enumerate(forwards)
    ]
    clashing = set()
    for i, (pi, ii, si, wi) in enumerate(forwards):
        for j, (pj, ij, sj, wj) in enumerate(forwards[:i]):
            if (pi, ii) == (pj, ij) and si <= sj + wj and sj <= si + wi:
                clashing |= {i, j}
    try:
        parse_document(data)
        reported: set[int] = set()
    except DocumentError as exc:
        assert all(e.loc.endswith(".public_start") for e in exc.errors), exc.errors
        reported = {int(e.loc.split(".")[1]) for e in exc.errors}
    assert bool(reported) == bool(clashing)
    assert reported <= clashing
