"""Lab names, addresses and the baseline router document (no root needed)."""

from __future__ import annotations

import ipaddress

import pytest

from appliances.lab import names, topology
from appliances.lab.baseline import baseline_document, derive
from appliances.lab.names import Guest, LabNames


@pytest.mark.parametrize("name", ["lab", "t", "a12345", "x9"])
def test_valid_names(name):
    n = LabNames(name)
    assert n.router == f"skf-{name}-router"
    for ifname in (n.control_bridge, n.control_veth):
        assert len(ifname) <= 15 and ifname.startswith(n.prefix)


@pytest.mark.parametrize("name", ["", "Lab", "1ab", "lab-1", "abcdefg", "la b", "lab_"])
def test_invalid_names(name):
    with pytest.raises(names.LabNameError):
        LabNames(name)


def test_guest_addressing():
    g1 = Guest(1)
    assert (g1.name, g1.mac, str(g1.ip)) == ("g1", "52:54:00:01:01:0b", "10.1.1.11")
    assert Guest.from_name("g12") == Guest(12)
    assert len({Guest(k).mac for k in range(1, names.MAX_GUESTS + 1)}) == names.MAX_GUESTS
    with pytest.raises(ValueError):
        Guest.from_name("router")
    with pytest.raises(ValueError):
        Guest(0)


def test_baseline_document():
    doc = baseline_document("r-lab", "169.254.100.2/24", [Guest(2), Guest(1)])
    assert doc.generation == 1
    assert str(doc.source_nat_ip) == "203.0.113.10"
    assert [str(p.ip) for p in doc.public_ips] == ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
    assert [h.hostname for h in doc.dhcp_hosts] == ["g1", "g2"]
    assert str(doc.interface("public").gateway) == "203.0.113.1"
    assert [str(ip) for ip in doc.guest_network.upstream_resolvers] == ["203.0.113.1"]
    assert doc.egress.default_policy == "allow"


def test_derive_bumps_generation_and_validates():
    doc = baseline_document("r-lab", "169.254.100.2/24", [Guest(1)])
    new = derive(doc, static_nats=[{"public_ip": "203.0.113.11", "guest_ip": "10.1.1.11"}])
    assert new.generation == 2 and len(new.static_nats) == 1
    assert derive(new, generation=7).generation == 7
    with pytest.raises(ValueError):
        derive(doc, static_nats=[{"public_ip": "203.0.113.99", "guest_ip": "10.1.1.11"}])


def test_control_subnet_conflicts():
    cand = ipaddress.IPv4Network("169.254.120.0/24")
    assert topology._conflicts(cand, ["169.254.120.1/24"])
    assert topology._conflicts(cand, ["169.254.120.7/16"])  # our host address inside
    assert topology._conflicts(cand, ["169.254.120.0/25"])
    assert not topology._conflicts(cand, ["169.254.0.1/16"])  # a /16 link-local is fine
    assert not topology._conflicts(cand, ["192.0.2.2/24", "169.254.121.1/24"])
    assert 169 not in names.CONTROL_OCTETS


def test_second_network_guests_and_routers():
    h1 = Guest.from_name("h1")
    assert (h1.name, h1.network, h1.mac, str(h1.ip)) == ("h1", 2, "52:54:00:02:01:0b",
                                                          "10.1.2.11")
    assert Guest(1) == Guest.from_name("g1") and Guest(1).network == 1
    all_guests = [Guest(k, net) for net in names.NETWORKS for k in range(1, names.MAX_GUESTS + 1)]
    assert len({g.mac for g in all_guests}) == len({g.name for g in all_guests}) == len(all_guests)
    routers = names.ROUTERS
    assert set(routers) == {"router", "router2", "rb"}
    # Every MAC on a shared segment is unique: routers, guests, internet, road warrior.
    macs = [m for spec in routers.values() for m in spec.macs.values()]
    macs += [g.mac for g in all_guests] + [names.INTERNET_MAC, names.ROADWARRIOR_MAC]
    assert len(macs) == len(set(macs))
    hosts = {spec.control_host for spec in routers.values()}
    assert hosts == {2, 3, 4}
    n = LabNames("a12345")
    for router, spec in routers.items():
        for ifname in (n.control_veth_of(router), spec.port_guest, spec.port_public):
            assert len(ifname) <= 15
    assert n.control_veth_of("router") == n.control_veth
    assert len({n.control_veth_of(r) for r in routers}) == 3
    assert routers["router2"].router_id("lab") == "r-lab-router2"
    assert routers["router"].router_id("lab") == "r-lab"
    assert str(names.control_addresses(120, "rb")[1]) == "169.254.120.3/24"


def test_baseline_document_of_router2_and_rb():
    doc = baseline_document("r-lab-router2", "169.254.100.4/24", [Guest(1, 2)], router="router2")
    assert str(doc.guest_network.cidr) == "10.1.2.0/24"
    assert str(doc.guest_network.gateway) == "10.1.2.1"
    assert str(doc.source_nat_ip) == "203.0.113.20"
    assert [str(p.ip) for p in doc.public_ips] == ["203.0.113.20", "203.0.113.21", "203.0.113.22"]
    assert [(h.hostname, str(h.ip)) for h in doc.dhcp_hosts] == [("h1", "10.1.2.11")]
    rb = baseline_document("r-lab-rb", "169.254.100.3/24", [Guest(1)], router="rb")
    assert str(rb.source_nat_ip) == "203.0.113.10"
    assert rb.interface("guest").mac != doc.interface("guest").mac
