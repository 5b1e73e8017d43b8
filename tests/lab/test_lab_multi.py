"""The lab with several routers: a second network, a redundant router, a road warrior.

The topology test uses the stub agent (configures nothing); the smoke test runs the
real agents: guests of both networks get leases and reach the internet through their
own network's router (the internet sees each router's source NAT address).
"""

from __future__ import annotations

import json

import pytest

from appliances.lab import names, netns
from appliances.lab.lab import Lab, LabError
from appliances.lab.testing import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("needs_lab")]


async def test_multi_router_topology(stub_agent):
    async with running_lab(
        guests=0, networks=2, redundant=True, roadwarrior=True, agent_cmd=stub_agent
    ) as lab:
        n = lab.names
        assert lab.routers == ("router", "rb", "router2")
        # The stub agent serves no DHCP: guests are added without waiting for leases.
        assert (await lab.add_guest(wait=False)).name == "g1"
        h1 = await lab.add_guest(network=2, wait=False)
        assert h1.name == "h1" and lab.documents["router2"].generation == 2
        assert lab.document.generation == 2
        desc = lab.describe()
        assert set(desc["namespaces"]) == {
            "switch",
            "internet",
            "router",
            "rb",
            "router2",
            "rw",
            "g1",
            "h1",
        }
        for ns in desc["namespaces"].values():
            assert netns.namespace_exists(ns)
        root = [li for li in await netns.link_names() if li.startswith(n.prefix)]
        assert sorted(root) == sorted(
            [n.control_bridge, *(n.control_veth_of(r) for r in lab.routers)]
        )
        # Each agent answers on its own control address with a certificate naming it.
        for router in lab.routers:
            assert (await lab.agent(router).health()).status == 200
            res = await netns.run(
                ["busybox", "ping", "-c", "1", "-W", "2", lab.control_ip_of(router)], check=False
            )
            assert res.ok, (router, res)
        assert {lab.router_id_of(r) for r in lab.routers} == {
            f"r-{lab.name}",
            f"r-{lab.name}-rb",
            f"r-{lab.name}-router2",
        }
        # Plugging: rb shares router's guest bridge; router2 has its own.
        switch_links = json.loads(
            (await netns.run(["ip", "-j", "-n", n.switch, "link", "show"])).stdout
        )
        master = {li["ifname"]: li.get("master") for li in switch_links}
        assert master["rtr-guest"] == master["rb-guest"] == master["g1"] == "guest"
        assert master["r2-guest"] == master["h1"] == "guest2"
        assert master["rtr-public"] == master["r2-public"] == master["rw"] == "public"
        # Only router and router2 got a baseline document; rb is left to its user.
        assert set(lab.documents) == {"router", "router2"}
        assert str(lab.documents["router2"].source_nat_ip) == "203.0.113.20"
        assert lab.baseline("rb").interface("guest").mac == names.ROUTERS["rb"].macs["eth0"]
        await lab.apply(lab.baseline("rb"), router="rb")
        assert lab.documents["rb"].router_id == lab.router_id_of("rb")
        # The road warrior reaches the internet's HTTP server directly on the segment.
        res = await lab.run_in("rw", ["busybox", "wget", "-qO-", "http://203.0.113.1/"])
        assert res.stdout.startswith("internet 203.0.113.50:"), res
        # Guests per network, added to their network's router document.
        await lab.remove_guest("h1")
        assert lab.documents["router2"].generation == 3
        assert lab.documents["router2"].dhcp_hosts == []
        assert lab.document.generation == 2
        # State round trip.
        loaded = Lab.load(lab.name, lab.state_dir)
        assert loaded.routers == lab.routers and loaded.roadwarrior
        assert set(loaded.documents) == {"router", "router2", "rb"}
        assert loaded.agent_url_of("router2") == lab.agent_url_of("router2")
        with pytest.raises(LabError):
            Lab(lab.name).agent("router2")  # a lab built without it
        name = lab.name
    assert await Lab(name).leftovers() == {}


async def test_two_networks_smoke(host_resolv_conf):
    async with running_lab(guests=1, networks=2) as lab:
        assert lab.lease("g1")["ip"] == "10.1.1.11"
        assert lab.lease("h1")["ip"] == "10.1.2.11"
        assert lab.lease("h1")["router"] == "10.1.2.1"
        for guest, snat in (("g1", "203.0.113.10"), ("h1", "203.0.113.20")):
            res = await lab.run_in(
                guest, ["busybox", "wget", "-qO-", "http://203.0.113.1/"], timeout=10
            )
            assert res.stdout.startswith(f"internet {snat}:"), (guest, res)
        # The networks are isolated: g1 cannot reach h1 through the routers (h1's
        # address is private and not routed across the public segment).
        res = await lab.run_in(
            "g1", ["busybox", "ping", "-c", "1", "-W", "1", "10.1.2.11"], check=False
        )
        assert not res.ok
