"""strongSwan VPN end to end: two lab networks build a tunnel, a road warrior connects.

One lab with two networks (router: 10.1.1.0/24 behind 203.0.113.10; router2:
10.1.2.0/24 behind 203.0.113.20) and the road-warrior namespace rw. The agents run
strongSwan with the kernel-libipsec data path (this kernel has no ESP). Traffic is
real: guests ping and fetch HTTP from the lab httpd across the tunnel, and the httpd's
answer shows the guest's own address arrived (no NAT).

Tests run in order and build on each other: the tunnel, then a third peer that must
leave the tunnel's SAs untouched, then remote access.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import e2e_traffic
import pytest
import pytest_asyncio
import roadwarrior

from appliances.lab import netns
from appliances.lab.lab import Lab
from appliances.lab.testing import lab_skip_reason, running_lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

PSK = "lab-s2s-secret-1"
RA_PSK = "lab-ra-secret-1"
RA_IP = "203.0.113.11"
POOL = ("10.9.9.10", "10.9.9.20")
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"}
DEADLINE = 60.0


#: The VPN tests wait longer and poll less often than the shared default.
until = functools.partial(e2e_traffic.until, timeout=DEADLINE, interval=0.5)


def s2s(local_gw: str, peer_gw: str, local: str, peer: str, **extra: Any) -> dict:
    return {
        "id": extra.pop("id", "tunnel"),
        "local_gateway": local_gw,
        "peer_gateway": peer_gw,
        "local_cidrs": [local],
        "peer_cidrs": [peer],
        "psk": PSK,
        **extra,
    }


async def vpn_status(lab: Lab, router: str = "router") -> dict:
    reply = await lab.agent(router).request("GET", "/v1/status")
    return reply.body["services"]["vpn"]


async def ping(lab: Lab, where: str, ip: str) -> netns.Result:
    return await lab.run_in(where, ["busybox", "ping", "-c", "1", "-W", "2", ip], timeout=10)


async def wget(lab: Lab, where: str, url: str) -> netns.Result:
    return await lab.run_in(where, ["busybox", "wget", "-qO-", url], timeout=15)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab():
    async with running_lab(guests=1, networks=2, roadwarrior=True) as the_lab:
        yield the_lab


# -- site to site ---------------------------------------------------------------------


async def test_tunnel_between_two_networks(lab):
    # router2 answers only (passive); router initiates.
    doc2 = lab.derive(
        "router2",
        vpn={
            "site_to_site": [
                s2s("203.0.113.20", "203.0.113.10", "10.1.2.0/24", "10.1.1.0/24", passive=True)
            ]
        },
    )
    await lab.apply(doc2, router="router2")
    doc1 = lab.derive(
        "router",
        vpn={"site_to_site": [s2s("203.0.113.10", "203.0.113.20", "10.1.1.0/24", "10.1.2.0/24")]},
    )
    await lab.apply(doc1, router="router")

    res = await until(lambda: ping(lab, "g1", "10.1.2.11"), lambda r: r.ok)
    assert res.ok, (res, await vpn_status(lab), await vpn_status(lab, "router2"))
    # HTTP both ways, and the far side sees the guest's own address: no NAT.
    res = await wget(lab, "g1", "http://10.1.2.11/")
    assert res.stdout.startswith("h1 10.1.1.11:"), res
    res = await wget(lab, "h1", "http://10.1.1.11/")
    assert res.stdout.startswith("g1 10.1.2.11:"), res
    # The traffic went through the tunnel (libipsec's TUN device), not around it.
    st = await vpn_status(lab)
    conn = st["connections"]["s2s-tunnel"]
    assert conn["state"] == "Connected" and conn["child_sas"] == 1, st
    assert conn["bytes_in"] > 0 and conn["bytes_out"] > 0, st
    assert st["datapath"] == "libipsec"
    st2 = await vpn_status(lab, "router2")
    assert st2["connections"]["s2s-tunnel"]["state"] == "Connected", st2
    # Guests still reach the internet through source NAT.
    res = await wget(lab, "g1", "http://203.0.113.1/")
    assert res.stdout.startswith("internet 203.0.113.10:"), res
    # A second apply of the same document (new generation) changes nothing.
    reply = await lab.apply(lab.derive("router"), router="router")
    assert "vpn" not in reply.body["services"], reply.body


async def test_third_peer_leaves_tunnel_untouched(lab):
    before = (await vpn_status(lab))["connections"]["s2s-tunnel"]
    assert before["state"] == "Connected", before
    tunnel = lab.documents["router"].vpn.site_to_site[0].model_dump(mode="json")
    ghost = s2s(
        "203.0.113.10", "203.0.113.99", "10.1.1.0/24", "10.77.0.0/24", id="ghost", dpd_interval_s=5
    )
    steps = [
        [tunnel, ghost],  # add
        [tunnel, {**ghost, "esp_policy": "aes256-sha256;modp2048"}],  # change
        [tunnel],  # remove
    ]
    for conns in steps:
        await lab.apply(lab.derive("router", vpn={"site_to_site": conns}), router="router")
        st = await vpn_status(lab)
        assert ("s2s-ghost" in st["connections"]) == (len(conns) == 2), st
        now = st["connections"]["s2s-tunnel"]
        assert now["ike_ids"] == before["ike_ids"] and now["spis"] == before["spis"], (before, now)
        assert (await ping(lab, "g1", "10.1.2.11")).ok
        if len(conns) == 2:  # the ghost peer never answers: it is not Connected
            assert st["connections"]["s2s-ghost"]["state"] in ("Disconnected", "Error"), st
    assert (await ping(lab, "h1", "10.1.1.11")).ok
    after = (await vpn_status(lab))["connections"]["s2s-tunnel"]
    assert after["ike_ids"] == before["ike_ids"] and after["spis"] == before["spis"]


async def test_weak_policy_is_refused(lab):
    """The agent refuses a weak policy before anything is loaded; the tunnel stays."""
    data = lab.documents["router"].model_dump(mode="json")
    tunnel = data["vpn"]["site_to_site"][0]
    weak = {
        **tunnel,
        "id": "weak",
        "peer_gateway": "203.0.113.98",
        "ike_policy": "3des-md5;modp1024",
    }
    data["vpn"]["site_to_site"].append(weak)
    data["generation"] += 1
    reply = await lab.put_config(data)
    assert reply.status == 422 and "allow_weak" in str(reply.body), reply.body
    st = (await vpn_status(lab))["connections"]
    assert "s2s-weak" not in st and st["s2s-tunnel"]["state"] == "Connected"


# -- remote access --------------------------------------------------------------------

def rw_client(lab: Lab) -> roadwarrior.Client:
    """The road-warrior charon in the lab's rw namespace."""
    return roadwarrior.Client(
        lab.state_dir / "rw-charon",
        lambda argv, env: lab.spawn_in("rw", "rw-charon", argv, env=dict(env)),
        lab.log("rw-charon"),
        server=RA_IP,
        guest_cidr="10.1.1.0/24",
        psk=RA_PSK,
        passwords=USERS,
    )


def ra_section(users: list[str]) -> dict:
    return {
        "public_ip": RA_IP,
        "pool_start": POOL[0],
        "pool_end": POOL[1],
        "psk": RA_PSK,
        "dns_servers": ["10.1.1.1"],
        "users": [{"name": u, "password": USERS[u]} for u in users],
    }


async def test_road_warrior(lab):
    vpn = lab.documents["router"].vpn.model_dump(mode="json")
    await lab.apply(
        lab.derive("router", vpn={**vpn, "remote_access": ra_section(["alice", "bob"])}),
        router="router",
    )
    tunnel_before = (await vpn_status(lab))["connections"]["s2s-tunnel"]
    client = rw_client(lab)
    await client.start()
    await client.connect("alice")
    st = await until(
        lambda: vpn_status(lab),
        lambda s: any(u["user"] == "alice" and u["virtual_ips"] for u in s["remote_access_users"]),
    )
    alice = next(u for u in st["remote_access_users"] if u["user"] == "alice")
    vip = alice["virtual_ips"][0]
    assert POOL[0] <= vip <= POOL[1] and vip.startswith("10.9.9."), alice
    # The client reaches a guest; the guest sees the pool address (not NATed).
    res = await until(lambda: wget(lab, "rw", "http://10.1.1.11/"), lambda r: r.ok)
    assert res.stdout.startswith(f"g1 {vip}:"), (res, await client.sas())

    await client.connect("bob")
    st = await until(
        lambda: vpn_status(lab),
        lambda s: len([u for u in s["remote_access_users"] if u["state"] == "ESTABLISHED"]) == 2,
    )
    users = {u["user"]: u for u in st["remote_access_users"]}
    assert set(users) == {"alice", "bob"}, st
    bob_id = users["bob"]["ike_id"]

    # Removing alice ends her session only; bob's IKE SA and the tunnel stay.
    await lab.apply(
        lab.derive("router", vpn={**vpn, "remote_access": ra_section(["bob"])}), router="router"
    )
    st = await until(
        lambda: vpn_status(lab),
        lambda s: "alice" not in {u["user"] for u in s["remote_access_users"]},
        timeout=20,
    )
    users = {u["user"]: u for u in st["remote_access_users"]}
    assert set(users) == {"bob"} and users["bob"]["ike_id"] == bob_id, st
    client_sas = await until(client.sas, lambda s: "alice" not in s, timeout=30)
    assert "alice" not in client_sas and "bob" in client_sas, client_sas
    tunnel_after = st["connections"]["s2s-tunnel"]
    assert tunnel_after["ike_ids"] == tunnel_before["ike_ids"]
    assert tunnel_after["spis"] == tunnel_before["spis"]
    # bob's session still carries traffic.
    res = await until(lambda: wget(lab, "rw", "http://10.1.1.11/"), lambda r: r.ok)
    assert res.stdout.startswith("g1 10.9.9."), res
    # Traffic between the pool and the guests does not leak to the internet's log.
    assert Path(lab.log("rw-charon")).exists()


async def test_ikev1_xauth_client_with_the_remote_access_psk(lab):
    vpn = lab.documents["router"].vpn.model_dump(mode="json")
    await lab.apply(
        lab.derive("router", vpn={**vpn, "remote_access": ra_section(["bob", "carol"])}),
        router="router",
    )
    client = rw_client(lab)
    if not client.socket.exists():
        await client.start()
    if "bob" in await client.sas():
        await client.disconnect("bob")  # carol's SA must be the one carrying the traffic
    await client.connect_xauth("carol")
    st = await until(
        lambda: vpn_status(lab),
        lambda s: any(u["user"] == "carol" and u["virtual_ips"] for u in s["remote_access_users"]),
    )
    carol = next(u for u in st["remote_access_users"] if u["user"] == "carol")
    assert carol["connection"] == "ra-xauth", carol
    vip = carol["virtual_ips"][0]
    res = await until(lambda: wget(lab, "rw", "http://10.1.1.11/"), lambda r: r.ok)
    assert res.stdout.startswith(f"g1 {vip}:"), (res, await client.sas())
