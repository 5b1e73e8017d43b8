"""Load balancing and VPN through the API end to end: cs client calls become router
documents, and real traffic shows each change.

One zone for the module (tests/e2e/orchestration.py). The load balancer spreads
requests from the lab's Internet over two instances, sticks them to one, and
follows its members. Two networks build a site-to-site tunnel over their VPN
gateways (a guest fetches HTTP from the other network, which sees its own
address: no NAT); a third, dead peer leaves the tunnel's SAs untouched. A
road-warrior client on the public segment connects to a remote access VPN as a
VPN user and reaches a guest; removing that user ends its session only.
"""

from __future__ import annotations

import asyncio
import functools

import e2e_traffic
import pytest
import pytest_asyncio
import roadwarrior
from orchestration import cloud
from sqlalchemy import select

from appliances.lab import daemons
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.networks import Network
from mgmt.orchestration import vpnstate
from mgmt.orchestration.hosts.driver import PUBLIC_VNI, NicPlan

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "lbv"
PSK = "lab-s2s-secret-9"
POLICY = {"ikepolicy": "aes128-sha256;modp2048", "esppolicy": "aes128-sha256"}
RW_IP = "203.0.113.50"
POOL = "10.9.9.10-10.9.9.20"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}

#: Tunnels take a few IKE round trips over user-space ESP: wait longer, poll less.
until = functools.partial(e2e_traffic.until, timeout=60, interval=0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        network = await c.network("web")
        vm1 = await c.deploy(network, "web1")
        vm2 = await c.deploy(network, "web2")
        yield c, network, vm1, vm2


def _ip(vm: dict) -> str:
    return vm["nic"][0]["ipaddress"]


def _first_word(body: str | None) -> str | None:
    return body.split()[0] if body else None


async def _answers(c, url: str, count: int = 6) -> list[str | None]:
    """Who answers ``count`` requests in a row (each a new connection)."""
    return [_first_word(await c.curl(url)) for _ in range(count)]


async def test_load_balancer_spreads_sticks_and_follows_its_members(world):
    c, network, vm1, vm2 = world
    ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
    lb = (
        await c.call(
            "createLoadBalancerRule",
            name="web",
            algorithm="roundrobin",
            publicipid=ip["id"],
            publicport=80,
            privateport=80,
        )
    )["loadbalancer"]
    assert lb["state"] == "Active"
    url = f"http://{ip['ipaddress']}/"
    empty = await c.curl(url, timeout=2)  # no member yet: HAProxy has no one to ask
    assert empty is None or "503" in empty, empty

    await c.call(
        "assignToLoadBalancerRule", id=lb["id"], virtualmachineids=f"{vm1['id']},{vm2['id']}"
    )
    spread = await until(lambda: _answers(c, url), lambda got: set(got) == {"web1", "web2"})
    assert set(spread) == {"web1", "web2"}, spread
    # A member whose instance is destroyed leaves the rotation with it.
    vm3 = await c.deploy(network, "web3")
    await c.call("assignToLoadBalancerRule", id=lb["id"], virtualmachineids=vm3["id"])
    three = await until(lambda: _answers(c, url), lambda got: len(set(got)) == 3)
    assert set(three) == {"web1", "web2", "web3"}, three
    assert await _haproxy_members(c, network) == [3]
    await c.call("destroyVirtualMachine", id=vm3["id"], expunge="true")
    assert await _haproxy_members(c, network) == [2]
    spread = await until(lambda: _answers(c, url), lambda got: set(got) == {"web1", "web2"})
    assert set(spread) == {"web1", "web2"}, spread

    await c.call(
        "createLBStickinessPolicy",
        lbruleid=lb["id"],
        methodname="SourceBased",
        name="by-source",
        **{"param[0].name": "expire", "param[0].value": "10m"},
    )
    stuck = await _answers(c, url)
    assert len(set(stuck)) == 1 and stuck[0] in ("web1", "web2"), stuck

    await c.call("removeFromLoadBalancerRule", id=lb["id"], virtualmachineids=vm1["id"])
    only = await until(lambda: _answers(c, url), lambda got: set(got) == {"web2"})
    assert set(only) == {"web2"}, only
    await c.call(
        "createLBHealthCheckPolicy",
        lbruleid=lb["id"],
        pingpath="/",
        intervaltime=2,
        responsetimeout=1,
        healthythreshold=1,
    )
    assert set(await _answers(c, url, 3)) == {"web2"}

    await c.call("deleteLoadBalancerRule", id=lb["id"])
    assert await c.curl(url, timeout=2) is None
    assert await c.call("listLoadBalancerRules", publicipid=ip["id"]) == {}


async def _states(c, network: dict) -> dict[str, str]:
    listed = await c.call("listVpnConnections", networkid=network["id"])
    return {conn["id"]: conn["state"] for conn in listed.get("vpnconnection", [])}


async def _router_status(c, network: dict) -> dict:
    """The network's router's agent live status (its services' own view)."""
    async with c.server.db.sessions() as session:
        router_id = await session.scalar(
            select(Router.id)
            .join(VmInstance, VmInstance.id == Router.vm_id)
            .join(Network, Network.id == Router.network_id)
            .where(Network.uuid == network["id"], Router.live(), VmInstance.live())
        )
    return await vpnstate.router_status(c.server.orchestrator, router_id)


async def _strongswan(c, network: dict) -> dict:
    """The router's view of its strongSwan connections."""
    return (await _router_status(c, network))["services"]["vpn"]["connections"]


async def _haproxy_members(c, network: dict) -> list[int]:
    """How many members each load balancer rule of the router's HAProxy has."""
    rules = (await _router_status(c, network))["services"]["haproxy"].get("rules", {})
    return sorted(len(rule["members"]) for rule in rules.values())


async def _connection_id(c, uuid: str) -> int:
    from mgmt.db.models.rules import VpnConnection

    async with c.server.db.sessions() as session:
        return await session.scalar(select(VpnConnection.id).where(VpnConnection.uuid == uuid))


async def test_site_to_site_between_two_networks(world):
    c, web, vm1, _ = world
    branch = (
        await c.call(
            "createNetwork",
            name="branch",
            displaytext="branch",
            zoneid=c.zone.zone["id"],
            networkofferingid=c.zone.network_offering["id"],
            gateway="10.2.2.1",
            netmask="255.255.255.0",
        )
    )["network"]
    b1 = await c.deploy(branch, "b1")
    gw_web = (await c.call("createVpnGateway", networkid=web["id"]))["vpngateway"]
    gw_branch = (await c.call("createVpnGateway", networkid=branch["id"]))["vpngateway"]
    to_branch = (
        await c.call(
            "createVpnCustomerGateway",
            name="to-branch",
            gateway=gw_branch["publicip"],
            cidrlist="10.2.2.0/24",
            ipsecpsk=PSK,
            dpd="true",
            **POLICY,
        )
    )["vpncustomergateway"]
    to_web = (
        await c.call(
            "createVpnCustomerGateway",
            name="to-web",
            gateway=gw_web["publicip"],
            cidrlist=web["cidr"],
            ipsecpsk=PSK,
            **POLICY,
        )
    )["vpncustomergateway"]
    # branch only answers (passive); web initiates.
    passive = (
        await c.call(
            "createVpnConnection",
            s2svpngatewayid=gw_branch["id"],
            s2scustomergatewayid=to_web["id"],
            passive="true",
        )
    )["vpnconnection"]
    assert passive["state"] in ("Disconnected", "Connected") and passive["passive"] is True
    active = (
        await c.call(
            "createVpnConnection",
            s2svpngatewayid=gw_web["id"],
            s2scustomergatewayid=to_branch["id"],
        )
    )["vpnconnection"]
    states = await until(lambda: _states(c, web), lambda s: s.get(active["id"]) == "Connected")
    assert states[active["id"]] == "Connected", states

    url = f"http://{_ip(b1)}/"
    body = await until(lambda: c.curl(url, role=vm1["instancename"]), lambda got: got)
    assert body.startswith(f"b1 {_ip(vm1)}:"), body  # the far side sees the guest: no NAT
    back = await c.curl(f"http://{_ip(vm1)}/", role=b1["instancename"])
    assert back and back.startswith(f"web1 {_ip(b1)}:"), back
    assert (await _states(c, branch))[passive["id"]] == "Connected"

    # A third peer that never answers: the tunnel's SAs stay as they are.
    name = vpnstate.strongswan_name(await _connection_id(c, active["id"]))
    before = (await _strongswan(c, web))[name]
    ghost = (
        await c.call(
            "createVpnCustomerGateway",
            name="ghost",
            gateway="203.0.113.99",
            cidrlist="10.77.0.0/24",
            ipsecpsk=PSK,
            **POLICY,
        )
    )["vpncustomergateway"]
    dead = (
        await c.call(
            "createVpnConnection", s2svpngatewayid=gw_web["id"], s2scustomergatewayid=ghost["id"]
        )
    )["vpnconnection"]
    assert dead["state"] in ("Disconnected", "Error"), dead
    after = (await _strongswan(c, web))[name]
    assert (after["ike_ids"], after["spis"]) == (before["ike_ids"], before["spis"])
    assert (await c.curl(url, role=vm1["instancename"]) or "").startswith("b1 ")
    await c.call("deleteVpnConnection", id=dead["id"])

    # A reset drops the tunnel and builds a new one (new SAs), which carries traffic.
    reset = (await c.call("resetVpnConnection", id=active["id"]))["vpnconnection"]
    assert reset["id"] == active["id"]
    await until(lambda: _states(c, web), lambda s: s.get(active["id"]) == "Connected")
    renewed = await until(
        lambda: _strongswan(c, web), lambda conns: conns.get(name, {}).get("state") == "Connected"
    )
    assert renewed[name]["spis"] != before["spis"]
    assert (await until(lambda: c.curl(url, role=vm1["instancename"]), bool)).startswith("b1 ")

    # Deleting the connection takes the tunnel down: the traffic never leaves in clear.
    await c.call("deleteVpnConnection", id=active["id"])
    assert await c.curl(url, role=vm1["instancename"], timeout=2) is None
    assert active["id"] not in await _states(c, web)


async def _road_warrior(c) -> str:
    """A namespace on the public segment (203.0.113.50, via the Internet) with a charon."""
    driver = c.driver()
    rt, ns = driver.runtime, c.ns("rw")
    await rt.ensure_namespace(ns)
    await rt.plug(
        ns, NicPlan("eth0", "02:00:cb:00:71:32", "public", PUBLIC_VNI), f"s{PUBLIC_VNI}", "rw"
    )
    await rt.ip(ns, "address", "replace", f"{RW_IP}/24", "dev", "eth0")
    await rt.ip(ns, "route", "replace", "default", "via", "203.0.113.1")
    return ns


def _sa_ids(sa: dict) -> tuple:
    """An IKE SA's unique id and its child SAs' SPIs: what a rekey or restart changes."""
    children = sa.get("child-sas") or {}
    return sa["uniqueid"], sorted((c["spi-in"], c["spi-out"]) for c in children.values())


async def test_remote_access_users(world):
    c, network, vm1, _ = world
    ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
    vpn = (await c.call("createRemoteAccessVpn", publicipid=ip["id"], iprange=POOL))[
        "remoteaccessvpn"
    ]
    assert vpn["state"] == "Running" and vpn["iprange"] == POOL
    for user, password in USERS.items():
        await c.call("addVpnUser", username=user, password=password)

    ns = await _road_warrior(c)
    state_dir = c.driver().state_dir
    log = state_dir / "logs" / "rw-charon.log"
    client = roadwarrior.Client(
        state_dir / "rw-charon",
        lambda argv, env: daemons.spawn(LAB, ns, argv, log, env),
        log,
        server=ip["ipaddress"],
        guest_cidr=network["cidr"],
        psk=vpn["presharedkey"],
        passwords=USERS,
    )
    await client.start()
    await client.connect("alice")
    url = f"http://{_ip(vm1)}/"
    body = await until(lambda: c.curl(url, role="rw"), lambda got: got)
    assert body.startswith("web1 10.9.9."), body  # the guest sees the pool address
    await client.connect("bob")
    sas = await client.sas()
    assert sas["alice"]["state"] == sas["bob"]["state"] == "ESTABLISHED", sas
    bob = _sa_ids(sas["bob"])

    await c.call("removeVpnUser", username="alice")
    sas = await until(client.sas, lambda s: "alice" not in s, timeout=30)
    assert "alice" not in sas and _sa_ids(sas["bob"]) == bob, sas  # bob's SAs stay
    body = await until(lambda: c.curl(url, role="rw"), lambda got: got)
    assert body.startswith("web1 10.9.9."), body  # bob's session still carries traffic
    assert [u["username"] for u in (await c.call("listVpnUsers"))["vpnuser"]] == ["bob"]

    await c.call("deleteRemoteAccessVpn", publicipid=ip["id"])
    gone = await until(client.sas, lambda s: "bob" not in s, timeout=30)
    assert "bob" not in gone
    assert await asyncio.wait_for(c.curl(url, role="rw", timeout=2), 10) is None
