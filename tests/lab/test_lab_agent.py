"""The lab with the real agent: guests get their leases, the host's resolv.conf is safe."""

from __future__ import annotations

import pytest

from appliances.lab import netns
from appliances.lab.testing import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("needs_lab")]


async def _wget(lab, where: str, url: str) -> str:
    # Not busybox wget -T: it segfaults in Debian 12's busybox 1.35.
    res = await lab.run_in(where, ["busybox", "wget", "-qO-", url], timeout=10)
    assert res.ok, res
    return res.stdout


async def test_guests_get_leases(host_resolv_conf):
    async with running_lab(guests=2) as lab:
        for g in lab.guests.values():
            lease = lab.lease(g.name)
            assert lease["event"] == "bound" and lease["ip"] == str(g.ip)
            resolv = netns.resolv_conf_path(lab.ns(g.name)).read_text()
            assert "search lab.test" in resolv and "nameserver 10.1.1.1" in resolv
            # ip netns exec shows the namespace's own file as /etc/resolv.conf.
            seen = await lab.run_in(g.name, ["cat", "/etc/resolv.conf"])
            assert seen.stdout == resolv
            routes = (await lab.run_in(g.name, ["ip", "-4", "route"])).stdout
            assert "default via 10.1.1.1 dev eth0" in routes
        desc = lab.describe()
        assert [(g["name"], g["lease"]) for g in desc["guests"]] == [
            ("g1", "10.1.1.11"), ("g2", "10.1.1.12")]
        # Guest to guest on the segment, and guest to internet through source NAT.
        assert (await _wget(lab, "g1", "http://10.1.1.12/")).startswith("g2 10.1.1.11:")
        assert (await _wget(lab, "g1", "http://203.0.113.1/")).startswith(
            "internet 203.0.113.10:")
        res = await lab.run_in("g1", ["busybox", "nslookup", "g2.lab.test"])
        assert "10.1.1.12" in res.stdout, res


async def test_add_and_remove_guest(host_resolv_conf):
    async with running_lab(guests=1) as lab:
        g = await lab.add_guest()
        assert g.name == "g2" and lab.lease("g2")["ip"] == "10.1.1.12"
        assert [h.hostname for h in lab.document.dhcp_hosts] == ["g1", "g2"]
        assert (await _wget(lab, "g2", "http://10.1.1.11/")).startswith("g1 10.1.1.12:")
        await lab.remove_guest("g2")
        assert not netns.namespace_exists(lab.ns("g2"))
        assert [h.hostname for h in lab.document.dhcp_hosts] == ["g1"]


async def test_renew_picks_up_classless_routes():
    async with running_lab(guests=1) as lab:
        gn = lab.document.guest_network.model_dump(mode="json")
        gn["classless_routes"] = [{"destination": "10.77.0.0/16", "gateway": "10.1.1.5"}]
        await lab.apply(lab.derive(guest_network=gn))
        lease = await lab.renew("g1")
        assert "10.77.0.0/16 10.1.1.5" in lease["staticroutes"]
        routes = (await lab.run_in("g1", ["ip", "-4", "route"])).stdout
        assert "10.77.0.0/16 via 10.1.1.5 dev eth0" in routes
        assert "default via 10.1.1.1 dev eth0" in routes
