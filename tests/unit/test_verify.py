"""Cross-field rules of verify.py: each names the right place with a useful message."""

from __future__ import annotations

import pytest
from router_docs import (
    egress,
    error_at,
    errors_of,
    forward,
    full,
    ingress,
    minimal,
    only_error_at,
)

from appliances.router.document import RouterDocument
from appliances.router.verify import MAX_EXPANDED_FORWARD_PORTS, parse_document, verify


def test_valid_documents_have_no_findings():
    for data in (minimal(), full()):
        doc = RouterDocument.model_validate(data)
        assert list(verify(doc)) == []
        parse_document(data)


def assert_pair_overlap(data, where: str, a: int, b: int) -> None:
    """Exactly one error: rule a or b (whichever sorts later) overlaps the other."""
    errors = errors_of(data)
    assert len(errors) == 1, errors
    first, second = f"{where}.{a}", f"{where}.{b}"
    assert errors[0].loc in (first, second)
    other = second if errors[0].loc == first else first
    assert f"overlaps {other} (" in errors[0].msg


# --- interfaces --------------------------------------------------------------


def test_gateway_only_on_public_interface():
    data = full()
    data["interfaces"][1]["gateway"] = "10.1.1.254"
    only_error_at(data, "interfaces.1.gateway", "only the public interface")


def test_public_gateway_must_be_in_a_subnet():
    data = full()
    data["interfaces"][2]["gateway"] = "198.51.100.1"
    only_error_at(data, "interfaces.2.gateway", "198.51.100.1", "not in any subnet", "eth2")


def test_exactly_one_guest_interface():
    data = full()
    data["interfaces"][1]["role"] = "control"
    errors = errors_of(data)
    assert "interfaces" in {e.loc for e in errors}
    assert any("exactly one interface must have role guest" in e.msg for e in errors)

    data = full()
    data["interfaces"].append({"role": "guest", "name": "eth3", "addresses": ["10.2.2.1/24"]})
    error_at(data, "interfaces", "exactly one")


@pytest.mark.parametrize("role", ["public", "control"])
def test_one_public_and_one_control_interface(role):
    data = full()
    data["interfaces"].append({"role": role, "name": "eth9", "addresses": ["100.64.0.1/24"]})
    only_error_at(data, "interfaces.3.role", f"only one {role} interface")


def test_duplicate_interface_name():
    data = full()
    data["interfaces"][2]["name"] = "eth0"
    only_error_at(data, "interfaces.2.name", "the same name as interfaces.0.name")


def test_duplicate_interface_mac():
    data = full()
    data["interfaces"][2]["mac"] = "02:00:0A:01:01:01"  # case differs; still the same MAC
    only_error_at(data, "interfaces.2.mac", "the same MAC as interfaces.1.mac")


def test_overlapping_interface_subnets():
    data = full()
    data["interfaces"][2]["addresses"].append("10.1.0.5/16")
    only_error_at(data, "interfaces.2.addresses.1", "10.1.0.0/16 overlaps 10.1.1.0/24",
                  "interfaces.1.addresses.0")


def test_overlap_within_one_interface_is_allowed():
    data = full()
    data["interfaces"][2]["addresses"].append("203.0.113.200/25")
    parse_document(data)


# --- guest network -----------------------------------------------------------


def test_guest_network_too_small():
    data = minimal()
    data["guest_network"]["cidr"] = "10.1.1.0/31"
    data["guest_network"]["gateway"] = "10.1.1.1"
    data["interfaces"][0]["addresses"] = ["10.1.1.1/31"]
    error_at(data, "guest_network.cidr", "too small", "/30 at most")


def test_guest_gateway_outside_cidr():
    data = minimal()
    data["guest_network"]["gateway"] = "10.1.2.1"
    error_at(data, "guest_network.gateway", "10.1.2.1 is not a host address in 10.1.1.0/24")


@pytest.mark.parametrize("gateway", ["10.1.1.0", "10.1.1.255"])
def test_guest_gateway_network_or_broadcast(gateway):
    data = minimal()
    data["guest_network"]["gateway"] = gateway
    data["interfaces"][0]["addresses"] = [f"{gateway}/24"]
    only_error_at(data, "guest_network.gateway", "not a host address")


def test_guest_interface_carries_gateway():
    data = full()
    data["interfaces"][1]["addresses"] = ["10.1.1.2/24"]
    only_error_at(data, "interfaces.1.addresses", "must carry the gateway address 10.1.1.1/24")
    data["interfaces"][1]["addresses"] = ["10.1.1.1/25"]  # right address, wrong prefix
    only_error_at(data, "interfaces.1.addresses", "10.1.1.1/24")


def test_classless_route_gateway_outside_guest():
    data = full()
    data["guest_network"]["classless_routes"][0]["gateway"] = "10.9.9.9"
    only_error_at(data, "guest_network.classless_routes.0.gateway",
                  "10.9.9.9 is not in the guest network 10.1.1.0/24")


def test_classless_default_route_refused():
    data = full()
    data["guest_network"]["classless_routes"][0]["destination"] = "0.0.0.0/0"
    only_error_at(data, "guest_network.classless_routes.0.destination", "default route")


def test_classless_route_duplicate_destination():
    data = full()
    data["guest_network"]["classless_routes"].append(
        {"destination": "192.168.50.0/24", "gateway": "10.1.1.253"})
    only_error_at(data, "guest_network.classless_routes.1.destination",
                  "the same destination as guest_network.classless_routes.0.destination")


def test_classless_route_gateway_is_not_broadcast():
    data = full()
    data["guest_network"]["classless_routes"][0]["gateway"] = "10.1.1.255"
    error_at(data, "guest_network.classless_routes.0.gateway")


# --- public IPs --------------------------------------------------------------


def test_public_ips_need_a_public_interface():
    data = minimal()
    data["public_ips"] = [{"ip": "203.0.113.10"}]
    only_error_at(data, "public_ips", "need an interface with role public")


def test_public_ip_outside_public_subnets():
    data = full()
    data["public_ips"][1]["ip"] = "198.51.100.11"
    data["port_forwards"][0]["public_ip"] = "198.51.100.11"
    only_error_at(data, "public_ips.1.ip", "198.51.100.11 is not in a subnet of the public")


def test_public_ip_in_a_second_public_subnet():
    data = full()
    data["interfaces"][2]["addresses"].append("198.51.100.5/28")
    data["public_ips"].append({"ip": "198.51.100.6"})
    parse_document(data)


def test_two_source_nat_ips():
    data = full()
    data["public_ips"][1]["source_nat"] = True
    data["public_ips"].append({"ip": "203.0.113.13", "source_nat": True})
    errors = errors_of(data)
    assert {e.loc for e in errors} == {"public_ips.1.source_nat", "public_ips.3.source_nat"}
    assert all("only one public IP can be the source NAT IP" in e.msg for e in errors)


def test_duplicate_public_ip():
    data = full()
    data["public_ips"].append({"ip": "203.0.113.11"})
    only_error_at(data, "public_ips.3.ip", "the same address as public_ips.1.ip")


# --- DHCP hosts and DNS records ----------------------------------------------


@pytest.mark.parametrize(
    ("ip", "words"),
    [("10.2.0.5", ("not in the guest network 10.1.1.0/24",)),
     ("10.1.1.0", ("network or broadcast",)),
     ("10.1.1.255", ("network or broadcast",)),
     ("10.1.1.1", ("the guest gateway",))],
)
def test_dhcp_host_ip_must_be_a_guest_host(ip, words):
    data = full()
    data["dhcp_hosts"][0]["ip"] = ip
    only_error_at(data, "dhcp_hosts.0.ip", ip, *words)


def test_duplicate_dhcp_mac():
    data = full()
    data["dhcp_hosts"][1]["mac"] = data["dhcp_hosts"][0]["mac"].upper()
    only_error_at(data, "dhcp_hosts.1.mac", "the same MAC as dhcp_hosts.0.mac")


def test_duplicate_dhcp_ip():
    data = full()
    data["dhcp_hosts"][1]["ip"] = data["dhcp_hosts"][0]["ip"]
    only_error_at(data, "dhcp_hosts.1.ip", "the same IP as dhcp_hosts.0.ip")


def test_duplicate_dhcp_hostname_ignores_case():
    data = full()
    data["dhcp_hosts"][1]["hostname"] = "WEB1"
    only_error_at(data, "dhcp_hosts.1.hostname", "the same hostname as dhcp_hosts.0.hostname")


@pytest.mark.parametrize("hostname", ["ignore", "infinite", "1234", "45m", "2d"])
def test_hostnames_dnsmasq_would_misread(hostname):
    data = full()
    data["dhcp_hosts"][0]["hostname"] = hostname
    error_at(data, "dhcp_hosts.0.hostname")


def test_duplicate_dns_record():
    data = full()
    data["dns_records"].append({"name": "WWW.cloud.internal", "ip": "10.1.1.10"})
    only_error_at(data, "dns_records.1", "the same DNS record as dns_records.0")


def test_dns_name_with_two_addresses_is_allowed():
    data = full()
    data["dns_records"].append({"name": "www.cloud.internal", "ip": "10.1.1.11"})
    parse_document(data)


# --- ingress rules -----------------------------------------------------------


def test_ingress_on_unknown_public_ip():
    data = full()
    data["ingress_rules"][0]["public_ip"] = "203.0.113.99"
    only_error_at(data, "ingress_rules.0.public_ip", "203.0.113.99 is not one of the router's")


def test_ingress_duplicate_id():
    data = full()
    data["ingress_rules"][1]["id"] = "in-ssh"
    only_error_at(data, "ingress_rules.1.id", "the same id as ingress_rules.0.id")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"start_port": 80}, {"start_port": 80}),
        ({"start_port": 80}, {"start_port": 70, "end_port": 90}),
        ({"start_port": 70, "end_port": 90}, {"start_port": 90, "end_port": 100}),
        ({"start_port": 1, "end_port": 65535}, {"start_port": 443}),
        ({"start_port": 22, "source_cidrs": ["192.0.2.0/24"]},
         {"start_port": 22, "source_cidrs": ["192.0.2.128/25"]}),
        ({"start_port": 22, "source_cidrs": ["192.0.2.0/24"]}, {"start_port": 22}),
        ({"protocol": "icmp"}, {"protocol": "icmp", "icmp_type": 8}),
        ({"protocol": "icmp", "icmp_type": 3}, {"protocol": "icmp", "icmp_type": 3,
                                                "icmp_code": 1}),
        ({"protocol": "all", "source_cidrs": ["10.0.0.0/8"]},
         {"protocol": "all", "source_cidrs": ["10.9.0.0/16"]}),
    ],
)
def test_overlapping_ingress_rules(first, second):
    data = full()
    data["ingress_rules"] = [ingress("a", **first), ingress("b", **second)]
    assert_pair_overlap(data, "ingress_rules", 0, 1)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"start_port": 80}, {"start_port": 81}),
        ({"start_port": 70, "end_port": 79}, {"start_port": 80, "end_port": 90}),
        ({"start_port": 80}, {"protocol": "udp", "start_port": 80}),
        ({"start_port": 80}, {"public_ip": "203.0.113.11", "start_port": 80}),
        ({"start_port": 22, "source_cidrs": ["192.0.2.0/25"]},
         {"start_port": 22, "source_cidrs": ["192.0.2.128/25"]}),
        ({"protocol": "icmp", "icmp_type": 8}, {"protocol": "icmp", "icmp_type": 0}),
        ({"protocol": "icmp", "icmp_type": 3, "icmp_code": 1},
         {"protocol": "icmp", "icmp_type": 3, "icmp_code": 2}),
        # Different protocols never conflict: they land in different sets.
        ({"protocol": "all"}, {"start_port": 80}),
        ({"protocol": "all"}, {"protocol": "icmp"}),
        ({"protocol": "icmp"}, {"protocol": "udp", "start_port": 1, "end_port": 65535}),
    ],
)
def test_non_overlapping_ingress_rules(first, second):
    data = full()
    data["ingress_rules"] = [ingress("a", **first), ingress("b", **second)]
    parse_document(data)


def test_ingress_rule_own_cidrs_overlap():
    data = full()
    data["ingress_rules"][0]["source_cidrs"] = ["192.0.2.0/24", "198.51.100.0/24",
                                                "192.0.2.64/26"]
    only_error_at(data, "ingress_rules.0", "its own entries overlap",
                  "192.0.2.0/24", "192.0.2.64/26")


def test_ingress_rule_duplicate_cidr():
    data = full()
    data["ingress_rules"][0]["source_cidrs"] = ["192.0.2.0/24", "192.0.2.0/24"]
    only_error_at(data, "ingress_rules.0", "its own entries overlap")


def test_ingress_overlap_among_many_rules_names_the_later_one():
    data = full()
    rules = [ingress(f"r{n}", start_port=1000 + 10 * n, end_port=1005 + 10 * n)
             for n in range(50)]
    rules.append(ingress("late", start_port=1253, end_port=1254))  # inside r25
    data["ingress_rules"] = rules
    only_error_at(data, "ingress_rules.50", "overlaps ingress_rules.25")


# --- egress rules ------------------------------------------------------------


def test_egress_source_outside_guest():
    data = full()
    data["egress"]["rules"][0]["source_cidrs"] = ["10.1.1.0/25", "10.2.0.0/16"]
    only_error_at(data, "egress.rules.0.source_cidrs.1",
                  "10.2.0.0/16 is not inside the guest network 10.1.1.0/24")


def test_egress_duplicate_id():
    data = full()
    data["egress"]["rules"].append(egress("eg-web", protocol="udp", start_port=53))
    only_error_at(data, "egress.rules.1.id", "the same id as egress.rules.0.id")


def test_overlapping_egress_rules():
    data = full()
    # Empty source_cidrs means the whole guest network, which holds 10.1.1.16/28.
    data["egress"]["rules"].append(
        egress("eg-2", start_port=443, source_cidrs=["10.1.1.16/28"],
               destination_cidrs=["8.8.8.0/24"]))
    only_error_at(data, "egress.rules.1", "overlaps egress.rules.0")


@pytest.mark.parametrize(
    "second",
    [
        {"protocol": "udp", "start_port": 80, "end_port": 443},
        {"start_port": 444},
        {"protocol": "all"},
        {"protocol": "icmp"},
    ],
)
def test_non_overlapping_egress_rules(second):
    data = full()
    data["egress"]["rules"].append(egress("eg-2", **second))
    parse_document(data)


def test_egress_overlap_needs_both_source_and_destination():
    data = full()
    data["egress"]["rules"] = [
        egress("a", start_port=80, source_cidrs=["10.1.1.0/25"], destination_cidrs=["8.8.0.0/16"]),
        egress("b", start_port=80, source_cidrs=["10.1.1.0/25"], destination_cidrs=["9.9.0.0/16"]),
        egress("c", start_port=80, source_cidrs=["10.1.1.128/25"],
               destination_cidrs=["8.8.0.0/16"]),
    ]
    parse_document(data)
    data["egress"]["rules"].append(
        egress("d", start_port=79, end_port=81, source_cidrs=["10.1.1.130/32"],
               destination_cidrs=["8.8.8.8/32"]))
    assert_pair_overlap(data, "egress.rules", 2, 3)


def test_egress_rule_own_cidrs_overlap():
    data = full()
    data["egress"]["rules"][0]["destination_cidrs"] = ["8.8.0.0/16", "8.8.8.0/24"]
    only_error_at(data, "egress.rules.0", "its own entries overlap", "8.8.0.0/16", "8.8.8.0/24")
    data = full()
    data["egress"]["rules"][0]["source_cidrs"] = ["10.1.1.0/24", "10.1.1.7/32"]
    only_error_at(data, "egress.rules.0", "its own entries overlap")


def test_egress_own_sources_may_share_a_destination():
    data = full()
    data["egress"]["rules"][0]["source_cidrs"] = ["10.1.1.0/25", "10.1.1.128/25"]
    parse_document(data)


# --- port forwards -----------------------------------------------------------


def test_forward_on_unknown_public_ip():
    data = full()
    data["port_forwards"][0]["public_ip"] = "203.0.113.99"
    only_error_at(data, "port_forwards.0.public_ip", "203.0.113.99 is not one of the router's")


def test_forward_on_static_nat_ip():
    data = full()
    data["port_forwards"][0]["public_ip"] = "203.0.113.12"
    only_error_at(data, "port_forwards.0.public_ip", "203.0.113.12 is used for static NAT")


def test_forward_on_source_nat_ip_is_allowed():
    data = full()
    data["port_forwards"][0]["public_ip"] = "203.0.113.10"
    parse_document(data)


@pytest.mark.parametrize("guest_ip", ["10.2.0.5", "10.1.1.255", "10.1.1.1"])
def test_forward_guest_ip_must_be_a_guest_host(guest_ip):
    data = full()
    data["port_forwards"][0]["guest_ip"] = guest_ip
    only_error_at(data, "port_forwards.0.guest_ip", guest_ip)


def test_forward_source_cidrs_overlap():
    data = full()
    data["port_forwards"][0]["source_cidrs"] = ["192.0.2.0/24", "192.0.2.9/32"]
    only_error_at(data, "port_forwards.0.source_cidrs", "entries overlap", "192.0.2.9/32")


def test_forward_duplicate_id():
    data = full()
    data["port_forwards"].append(forward("pf-ssh", public_start=2223, guest_start=22))
    only_error_at(data, "port_forwards.1.id", "the same id as port_forwards.0.id")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"public_start": 80}, {"public_start": 80, "guest_start": 8080}),
        ({"public_start": 85}, {"public_start": 80, "public_end": 90}),  # single vs range
        ({"public_start": 80, "public_end": 90}, {"public_start": 90, "public_end": 95}),
        ({"public_start": 80, "public_end": 90}, {"public_start": 82, "public_end": 85}),
        ({"public_start": 80, "public_end": 90, "guest_start": 1000},
         {"public_start": 85, "guest_start": 22}),
    ],
)
def test_overlapping_forwards(first, second):
    data = full()
    data["port_forwards"] = [forward("a", **first), forward("b", **second)]
    errors = errors_of(data)
    assert len(errors) == 1, errors
    err = errors[0]
    assert err.loc in ("port_forwards.0.public_start", "port_forwards.1.public_start")
    assert "tcp 203.0.113.11 ports" in err.msg and "overlap port_forwards." in err.msg


def test_forward_overlap_message_names_the_other_forward():
    data = full()
    data["port_forwards"] = [forward("a", public_start=100, public_end=200),
                             forward("b", public_start=150)]
    only_error_at(data, "port_forwards.1.public_start",
                  "tcp 203.0.113.11 ports 150-150 overlap port_forwards.0")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"public_start": 80}, {"public_start": 80, "protocol": "udp"}),
        ({"public_start": 80, "public_end": 90}, {"public_start": 85, "protocol": "udp"}),
        ({"public_start": 80, "public_end": 89}, {"public_start": 90, "public_end": 99}),
        ({"public_start": 80}, {"public_start": 80, "public_ip": "203.0.113.10"}),
    ],
)
def test_non_overlapping_forwards(first, second):
    data = full()
    data["port_forwards"] = [forward("a", **first), forward("b", **second)]
    parse_document(data)


def test_shifted_range_expansion_cap():
    data = full()
    # Shifted ranges are expanded port by port: 2 x 40,000 ports is over the cap.
    data["port_forwards"] = [
        forward("a", public_start=1, public_end=40_000, guest_start=10_001),
        forward("b", protocol="udp", public_start=1, public_end=40_000, guest_start=10_001),
    ]
    err = only_error_at(data, "port_forwards", "80000 ports", str(MAX_EXPANDED_FORWARD_PORTS))
    assert "equal ranges" in err.msg


def test_expansion_cap_ignores_equal_ranges_and_single_ports():
    data = full()
    data["port_forwards"] = [
        forward("a", public_start=1, public_end=65_535, guest_start=1),
        forward("b", protocol="udp", public_start=1, public_end=40_000, guest_start=1),
        forward("c", protocol="udp", public_start=40_001, guest_start=1),
        forward("d", protocol="udp", public_start=40_002, public_end=65_535, guest_start=2),
    ]
    parse_document(data)  # d alone expands to 25,534 ports


def test_expansion_cap_boundary():
    data = full()
    data["port_forwards"] = [
        forward("a", public_start=1, public_end=32_768, guest_start=2),
        forward("b", protocol="udp", public_start=1, public_end=32_768, guest_start=2),
    ]
    parse_document(data)  # exactly 65,536
    data["port_forwards"][1]["public_end"] = 32_769
    only_error_at(data, "port_forwards", "65537 ports")


# --- static NAT --------------------------------------------------------------


def test_static_nat_on_unknown_public_ip():
    data = full()
    data["static_nats"][0]["public_ip"] = "203.0.113.99"
    only_error_at(data, "static_nats.0.public_ip", "not one of the router's public_ips")


def test_static_nat_on_source_nat_ip():
    data = full()
    data["static_nats"][0]["public_ip"] = "203.0.113.10"
    only_error_at(data, "static_nats.0.public_ip", "203.0.113.10 is the source NAT IP")


def test_static_nat_guest_ip_must_be_a_guest_host():
    data = full()
    data["static_nats"][0]["guest_ip"] = "192.168.1.1"
    only_error_at(data, "static_nats.0.guest_ip", "not in the guest network")


def test_static_nat_duplicates():
    data = full()
    data["static_nats"].append({"public_ip": "203.0.113.12", "guest_ip": "10.1.1.11"})
    errors = errors_of(data)
    assert {e.loc: e.msg for e in errors} == {
        "static_nats.1.public_ip": "the same public IP as static_nats.0.public_ip",
        "static_nats.1.guest_ip": "the same guest IP as static_nats.0.guest_ip",
    }


# --- static routes -----------------------------------------------------------


def test_static_route_gateway_not_connected():
    data = full()
    data["static_routes"][0]["gateway"] = "192.168.7.1"
    only_error_at(data, "static_routes.0.gateway",
                  "192.168.7.1 is not on a directly connected network")


def test_static_route_via_control_network_is_not_connected():
    data = full()
    data["static_routes"][0]["gateway"] = "169.254.0.1"
    only_error_at(data, "static_routes.0.gateway", "guest or public")


def test_static_route_via_public_subnet():
    data = full()
    data["static_routes"][0]["gateway"] = "203.0.113.254"
    parse_document(data)


def test_static_route_overlapping_guest():
    data = full()
    data["static_routes"][0]["cidr"] = "10.0.0.0/8"
    only_error_at(data, "static_routes.0.cidr", "10.0.0.0/8 overlaps the guest network")


def test_static_default_route_refused():
    data = full()
    data["static_routes"][0]["cidr"] = "0.0.0.0/0"
    errors = errors_of(data)
    assert {e.loc for e in errors} == {"static_routes.0.cidr"}
    assert any("the default route comes from the public gateway" in e.msg for e in errors)


def test_static_route_duplicate_destination():
    data = full()
    data["static_routes"].append({"cidr": "172.31.0.0/16", "gateway": "10.1.1.253"})
    only_error_at(data, "static_routes.1.cidr", "the same destination as static_routes.0.cidr")


def test_static_route_gateway_is_not_a_broadcast_address():
    data = full()
    data["static_routes"][0]["gateway"] = "10.1.1.255"
    error_at(data, "static_routes.0.gateway")


# --- every semantic problem at once ------------------------------------------


def test_semantic_pass_reports_every_problem():
    data = full()
    data["guest_network"]["gateway"] = "10.1.2.1"
    data["interfaces"][2]["mac"] = data["interfaces"][0]["mac"]
    data["dhcp_hosts"][1]["mac"] = data["dhcp_hosts"][0]["mac"]
    data["dhcp_hosts"][1]["ip"] = "10.1.1.10"
    data["dhcp_hosts"][1]["hostname"] = "web1"
    data["public_ips"][1]["ip"] = "198.51.100.11"
    data["public_ips"][2]["source_nat"] = True
    data["ingress_rules"].append(ingress("in-ssh2", start_port=20, end_port=30,
                                         source_cidrs=["192.0.2.128/25"]))
    data["egress"]["rules"][0]["source_cidrs"] = ["10.2.0.0/16"]
    data["port_forwards"].append(forward("pf-x", public_ip="203.0.113.12"))
    data["static_routes"][0]["gateway"] = "192.168.7.1"
    locs = {e.loc for e in errors_of(data)}
    assert locs >= {
        "guest_network.gateway",
        "interfaces.1.addresses",
        "interfaces.2.mac",
        "dhcp_hosts.1.mac",
        "dhcp_hosts.1.ip",
        "dhcp_hosts.1.hostname",
        "public_ips.1.ip",
        "public_ips.2.source_nat",
        "port_forwards.0.public_ip",  # 203.0.113.11 is no longer a public IP
        "port_forwards.1.public_ip",  # on the static NAT IP
        "egress.rules.0.source_cidrs.0",
        "static_routes.0.gateway",
    }
    assert locs & {"ingress_rules.0", "ingress_rules.2"}


def test_verify_is_a_generator_of_field_errors():
    data = full()
    data["static_routes"][0]["gateway"] = "192.168.7.1"
    doc = RouterDocument.model_validate(data)
    findings = list(verify(doc))
    assert [f.loc for f in findings] == ["static_routes.0.gateway"]
