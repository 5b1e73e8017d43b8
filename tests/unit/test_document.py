"""Field-level rules of the router document (pydantic) and its JSON Schema."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from router_docs import error_at, errors_of, full, minimal

from appliances.common.errors import DocumentError
from appliances.router.document import (
    ANY_V4,
    SCHEMA_VERSION,
    EgressRule,
    IngressRule,
    PortForward,
    RouterDocument,
)
from appliances.router.verify import parse_document


def readable_error_at(data, loc: str, *words: str):
    """The error at ``loc`` says what the field must be and shows the input, and does
    not dump a regular expression at the operator."""
    err = error_at(data, loc, *words)
    assert "pattern" not in err.msg and "^" not in err.msg, err.msg
    assert "(got " in err.msg, err.msg
    return err


# --- valid documents ---------------------------------------------------------


def test_minimal_document_parses_with_defaults():
    doc = parse_document(minimal())
    assert doc.schema_version == SCHEMA_VERSION == 1
    assert doc.public_ips == [] and doc.port_forwards == [] and doc.static_routes == []
    assert doc.egress.default_policy == "allow" and doc.egress.rules == []
    assert doc.guest_network.lease_seconds is None
    assert doc.guest_network.dns_servers == []
    assert doc.interfaces[0].mtu == 1500
    assert doc.source_nat_ip is None
    assert doc.interface("public") is None
    assert doc.interface("guest").name == "eth1"


def test_full_document_parses():
    doc = parse_document(full())
    assert str(doc.source_nat_ip) == "203.0.113.10"
    assert str(doc.interface("public").gateway) == "203.0.113.1"
    assert [str(c) for c in doc.ingress_rules[0].source_cidrs] == ["192.0.2.0/24"]
    # Defaults: any source for ingress rules and forwards, the whole world as destination.
    assert [str(c) for c in doc.ingress_rules[1].source_cidrs] == ["0.0.0.0/0"]
    assert doc.ingress_rules[1].source_cidrs == [ANY_V4]
    assert doc.port_forwards[0].source_cidrs == [ANY_V4]
    assert doc.egress.rules[0].destination_cidrs == [ANY_V4]
    assert doc.egress.rules[0].source_cidrs == []


def test_document_is_frozen():
    doc = parse_document(minimal())
    with pytest.raises(ValidationError):
        doc.generation = 2


def test_mac_is_lowercased():
    data = full()
    data["dhcp_hosts"][0]["mac"] = "02:AB:CD:EF:00:10"
    doc = parse_document(data)
    assert doc.dhcp_hosts[0].mac == "02:ab:cd:ef:00:10"


def test_document_round_trips_through_json():
    doc = parse_document(full())
    again = parse_document(json.loads(doc.model_dump_json()))
    assert again == doc


# --- structural errors name the field ----------------------------------------


def test_unknown_field_is_refused():
    data = minimal()
    data["guest_network"]["dns"] = "1.1.1.1"
    error_at(data, "guest_network.dns", "Extra inputs")


def test_missing_field_is_named():
    data = minimal()
    del data["generation"]
    error_at(data, "generation", "required")


def test_schema_version_must_be_1():
    data = minimal()
    data["schema_version"] = 2
    error_at(data, "schema_version")


@pytest.mark.parametrize("generation", [-1, "x", 1.5])
def test_generation_must_be_a_non_negative_int(generation):
    data = minimal()
    data["generation"] = generation
    error_at(data, "generation")


@pytest.mark.parametrize("mtu", [575, 9217])
def test_mtu_range(mtu):
    data = minimal()
    data["interfaces"][0]["mtu"] = mtu
    error_at(data, "interfaces.0.mtu")


@pytest.mark.parametrize("lease", [119, 31_536_001, 0])
def test_lease_seconds_range(lease):
    data = minimal()
    data["guest_network"]["lease_seconds"] = lease
    error_at(data, "guest_network.lease_seconds")


def test_role_must_be_known():
    data = minimal()
    data["interfaces"][0]["role"] = "private"
    error_at(data, "interfaces.0.role")


def test_interfaces_must_not_be_empty():
    data = minimal()
    data["interfaces"] = []
    error_at(data, "interfaces", "at least 1")


def test_interface_needs_an_address():
    data = minimal()
    data["interfaces"][0]["addresses"] = []
    error_at(data, "interfaces.0.addresses")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("a", True), ("a" * 64, True), ("a" * 65, False), ("r-1.x_y", True), ("-r", False),
     ("_r", False), (".r", False), ("r/1", False), ("", False)],
)
def test_router_id_charset_and_length(value, ok):
    data = minimal()
    data["router_id"] = value
    if ok:
        assert parse_document(data).router_id == value
    else:
        readable_error_at(data, "router_id")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("eth0", True), ("a" * 15, True), ("a" * 16, False), ("eth0.100", True),
     ("br-x_1", True), ("-eth", False), ("eth 0", False), ("eth0/1", False)],
)
def test_interface_name_fits_ifnamsiz(value, ok):
    data = minimal()
    data["interfaces"][0]["name"] = value
    if ok:
        parse_document(data)
    else:
        readable_error_at(data, "interfaces.0.name")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("web1", True), ("a" * 63, True), ("a" * 64, False), ("a-b", True), ("-ab", False),
     ("ab-", False), ("a.b", False), ("a_b", False), ("", False)],
)
def test_hostname_is_one_rfc1123_label(value, ok):
    data = full()
    data["dhcp_hosts"][0]["hostname"] = value
    if ok:
        parse_document(data)
    else:
        readable_error_at(data, "dhcp_hosts.0.hostname")


def test_domain_length_limit():
    label = "a" * 63
    ok = ".".join([label] * 3) + "." + "b" * 61  # 253 characters
    assert len(ok) == 253
    data = minimal()
    data["guest_network"]["domain"] = ok
    parse_document(data)
    data["guest_network"]["domain"] = ok + "b"
    error_at(data, "guest_network.domain", "at most 253")


@pytest.mark.parametrize("domain", ["a..b", ".a", "a.", "a.-b", "a b", "a_b.c"])
def test_bad_domain_names(domain):
    data = minimal()
    data["guest_network"]["domain"] = domain
    readable_error_at(data, "guest_network.domain")


@pytest.mark.parametrize(
    ("mac", "words"),
    [("01:00:5e:00:00:01", ("unicast",)), ("03:00:00:00:00:01", ("multicast bit",)),
     ("00:00:00:00:00:00", ("all-zero",)), ("02:00:00:00:00", ("MAC",)),
     ("02-00-00-00-00-01", ("MAC",)), ("0200.0000.0001", ("MAC",))],
)
def test_mac_must_be_unicast_colon_form(mac, words):
    data = full()
    data["dhcp_hosts"][0]["mac"] = mac
    readable_error_at(data, "dhcp_hosts.0.mac", *words)


NON_UNICAST = ["224.0.0.1", "0.0.0.0", "255.255.255.255", "239.1.2.3"]
MALFORMED = ["10.1.1", "10.1.1.256", "::1", "10.1.1.1/32", "host", "010.1.1.1", "10.1.1.01"]


@pytest.mark.parametrize("ip", NON_UNICAST)
def test_host_addresses_must_be_unicast(ip):
    data = full()
    data["dhcp_hosts"][0]["ip"] = ip
    readable_error_at(data, "dhcp_hosts.0.ip", ip, "unicast")


@pytest.mark.parametrize("ip", MALFORMED)
def test_bad_ipv4_address(ip):
    data = full()
    data["dns_records"][0]["ip"] = ip
    readable_error_at(data, "dns_records.0.ip", ip, "IPv4")


@pytest.mark.parametrize("value", [1, True, 3232235777, None, ["10.1.1.1"]])
def test_addresses_must_be_strings(value):
    data = full()
    data["dns_records"][0]["ip"] = value
    error_at(data, "dns_records.0.ip")


def test_cidr_with_host_bits_names_the_field():
    data = minimal()
    data["guest_network"]["cidr"] = "10.1.1.1/24"
    err = error_at(data, "guest_network.cidr")
    assert "10.1.1.1/24" in err.msg


def test_cidr_with_host_bits_says_host_bits():
    data = full()
    data["static_routes"][0]["cidr"] = "172.31.0.1/16"
    readable_error_at(data, "static_routes.0.cidr", "host bits")


@pytest.mark.parametrize("cidr", ["172.31.0.0/33", "172.31.0.0", "172.31.0/16", "0172.31.0.0/16",
                                  "172.31.0.0/016", "172.31.0.0/255.255.0.0"])
def test_malformed_cidr(cidr):
    data = full()
    data["static_routes"][0]["cidr"] = cidr
    readable_error_at(data, "static_routes.0.cidr")


def test_cidr_list_items_are_named():
    data = full()
    data["ingress_rules"][0]["source_cidrs"] = ["192.0.2.0/24", "198.51.100.0/33"]
    error_at(data, "ingress_rules.0.source_cidrs.1")


# --- protocol / port combinations (_PortsMixin) --------------------------------


def _rule(**fields):
    return {"id": "r", "public_ip": "203.0.113.10", **fields}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"protocol": "tcp"}, ("start_port is required",)),
        ({"protocol": "udp", "end_port": 5}, ("start_port is required",)),
        ({"protocol": "tcp", "start_port": 10, "end_port": 9}, ("below start_port",)),
        ({"protocol": "tcp", "start_port": 10, "icmp_type": 8}, ("only for protocol icmp",)),
        ({"protocol": "icmp", "start_port": 10}, ("ports are not allowed",)),
        ({"protocol": "all", "end_port": 10}, ("ports are not allowed",)),
        ({"protocol": "all", "icmp_type": 8}, ("only for protocol icmp",)),
        ({"protocol": "icmp", "icmp_code": 0}, ("needs a specific icmp_type",)),
        ({"protocol": "icmp", "icmp_type": -1, "icmp_code": 3}, ("needs a specific icmp_type",)),
        ({"protocol": "icmp", "icmp_type": 256}, ("less than or equal to 255",)),
        ({"protocol": "tcp", "start_port": 0}, ("greater than or equal to 1",)),
        ({"protocol": "tcp", "start_port": 65536}, ("less than or equal to 65535",)),
        ({"protocol": "gre"}, ("tcp", "udp")),
    ],
)
def test_ingress_ports_fit_protocol(fields, words):
    data = full()
    data["ingress_rules"] = [_rule(**fields)]
    errors = errors_of(data)
    assert all(e.loc.startswith("ingress_rules.0") for e in errors), errors
    text = " ".join(e.msg for e in errors)
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    "fields",
    [
        {"protocol": "tcp", "start_port": 1, "end_port": 65535},
        {"protocol": "udp", "start_port": 53},
        {"protocol": "icmp"},
        {"protocol": "icmp", "icmp_type": -1, "icmp_code": -1},
        {"protocol": "icmp", "icmp_type": 3, "icmp_code": 4},
        {"protocol": "icmp", "icmp_type": 0},
        {"protocol": "all"},
    ],
)
def test_valid_protocol_port_combinations(fields):
    rule = IngressRule.model_validate(_rule(**fields))
    assert rule.protocol == fields["protocol"]
    EgressRule.model_validate({"id": "e", **fields})


def test_port_range_property():
    rule = IngressRule.model_validate(_rule(protocol="tcp", start_port=80))
    assert rule.port_range == (80, 80)
    rule = IngressRule.model_validate(_rule(protocol="tcp", start_port=80, end_port=90))
    assert rule.port_range == (80, 90)
    assert IngressRule.model_validate(_rule(protocol="all")).port_range is None


def test_egress_rule_needs_a_destination():
    data = full()
    data["egress"]["rules"][0]["destination_cidrs"] = []
    error_at(data, "egress.rules.0.destination_cidrs", "at least 1")


def test_egress_policy_values():
    data = full()
    data["egress"]["default_policy"] = "reject"
    error_at(data, "egress.default_policy")


# --- port forward ranges -----------------------------------------------------


def _pf(**fields):
    base = {"id": "pf", "public_ip": "203.0.113.11", "protocol": "tcp", "public_start": 80,
            "guest_ip": "10.1.1.10", "guest_start": 8080}
    return {**base, **fields}


def test_forward_ranges_default_to_public_length():
    pf = PortForward.model_validate(_pf(public_start=1000, public_end=1009, guest_start=2000))
    assert pf.public_range == (1000, 1009)
    assert pf.guest_range == (2000, 2009)
    single = PortForward.model_validate(_pf())
    assert single.public_range == (80, 80) and single.guest_range == (8080, 8080)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"public_start": 100, "public_end": 90}, ("public_end 90 is below public_start 100",)),
        ({"guest_start": 100, "guest_end": 90}, ("guest_end 90 is below guest_start 100",)),
        ({"public_start": 100, "public_end": 110, "guest_start": 200, "guest_end": 205},
         ("100-110", "200-205", "same size")),
        ({"public_start": 100, "guest_start": 200, "guest_end": 201}, ("same size",)),
        ({"public_start": 100, "public_end": 110, "guest_start": 65530},
         ("would pass port 65535",)),
        ({"protocol": "icmp"}, ()),
        ({"protocol": "all"}, ()),
        ({"public_start": 0}, ()),
    ],
)
def test_forward_range_sizes(fields, words):
    data = full()
    data["port_forwards"] = [_pf(**fields)]
    errors = errors_of(data)
    assert all(e.loc.startswith("port_forwards.0") for e in errors), errors
    text = " ".join(e.msg for e in errors)
    for word in words:
        assert word in text


def test_forward_range_at_the_top_of_the_port_space_is_fine():
    data = full()
    data["port_forwards"] = [_pf(public_start=65530, public_end=65535, guest_start=65530)]
    parse_document(data)


# --- every structural problem at once ---------------------------------------


def test_structural_pass_reports_every_problem():
    data = full()
    data["router_id"] = "bad id"
    del data["generation"]
    data["interfaces"][1]["mac"] = "zz:00:00:00:00:00"
    data["interfaces"][2]["mtu"] = 100
    data["guest_network"]["domain"] = "bad domain"
    data["dhcp_hosts"][1]["ip"] = "10.1.1.300"
    data["ingress_rules"][1]["protocol"] = "tcp"  # no start_port
    data["port_forwards"][0]["public_start"] = 70000
    data["static_routes"][0]["gateway"] = "224.0.0.1"
    data["surprise"] = True
    locs = {e.loc for e in errors_of(data)}
    assert locs >= {
        "router_id", "generation", "interfaces.1.mac", "interfaces.2.mtu",
        "guest_network.domain", "dhcp_hosts.1.ip", "ingress_rules.1",
        "port_forwards.0.public_start", "static_routes.0.gateway", "surprise",
    }


def test_document_error_message_lists_problems_and_truncates():
    data = minimal()
    data["public_ips"] = [{"ip": f"10.9.{i}.1", "bogus": 1} for i in range(25)]
    with pytest.raises(DocumentError) as info:
        parse_document(data)
    assert len(info.value.errors) == 25
    text = str(info.value)
    assert text.startswith("invalid document: public_ips.0.bogus: ")
    assert "(and 5 more)" in text


def test_long_inputs_are_shown_truncated():
    data = minimal()
    data["router_id"] = "x" * 5000
    err = error_at(data, "router_id")
    assert err.msg.endswith("...)")
    assert len(err.msg) < 300


def test_non_mapping_document():
    for junk in (None, [], "doc", 3):
        errors = errors_of(junk)
        assert errors[0].loc == "(document)"


def test_field_error_as_dict():
    err = errors_of({**minimal(), "router_id": "-"})[0]
    assert err.as_dict() == {"loc": "router_id", "msg": err.msg}


# --- JSON Schema -------------------------------------------------------------


def test_json_schema_is_generated():
    schema = RouterDocument.model_json_schema()
    json.dumps(schema)  # serialisable
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"router_id", "generation", "interfaces", "guest_network"}
    props = schema["properties"]
    for name in ("router_id", "interfaces", "guest_network", "public_ips", "dhcp_hosts",
                 "dns_records", "ingress_rules", "egress", "port_forwards", "static_nats",
                 "static_routes", "schema_version"):
        assert name in props, name
    assert props["router_id"]["pattern"].startswith("^[A-Za-z0-9]")
    defs = schema["$defs"]
    for name in ("Interface", "GuestNetwork", "PortForward", "IngressRule", "EgressRule",
                 "StaticNat", "StaticRoute", "DhcpHost", "DnsRecord", "PublicIp"):
        assert name in defs, name
        assert defs[name]["additionalProperties"] is False
    assert defs["PortForward"]["properties"]["protocol"]["enum"] == ["tcp", "udp"]
    assert defs["Interface"]["properties"]["mtu"]["maximum"] == 9216
    assert "description" in defs["GuestNetwork"]["properties"]["dns_servers"]
