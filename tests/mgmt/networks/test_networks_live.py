"""Guest networks (as records) on a live server, driven by the real cs client."""

from __future__ import annotations

import asyncio

import pytest
from cs.client import CloudStack, CloudStackApiException

MISSING = "00000000-0000-0000-0000-000000000000"
DEFAULT = "DefaultIsolatedNetworkOfferingWithSourceNatService"


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def api_error(coro) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await coro
    return err.value.error


@pytest.fixture
async def world(live):
    admin = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                       poll_interval=0.05, fetch_result=True)
    zone = (await call(admin, "createZone", name="z1", networktype="Advanced",
                       allocationstate="Enabled", guestcidraddress="10.20.0.0/16"))["zone"]
    [offering] = (await call(admin, "listNetworkOfferings", name=DEFAULT))["networkoffering"]
    account = (await call(admin, "createAccount", username="alice", password="pw",
                          email="a@x.test", firstname="A", lastname="T"))["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    alice = CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"],
                       poll_interval=0.05, fetch_result=True)
    return admin, alice, zone, offering, account


async def test_create_list_update_restart_delete(world):
    admin, alice, zone, offering, account = world
    net = (await call(alice, "createNetwork", name="web", zoneid=zone["id"],
                      networkofferingid=offering["id"]))["network"]
    assert net["state"] == "Allocated" and net["type"] == "Isolated"
    assert net["cidr"] == "10.20.0.0/16" and net["gateway"] == "10.20.0.1"  # the zone's CIDR
    assert net["netmask"] == "255.255.0.0" and net["traffictype"] == "Guest"
    assert net["account"] == "alice" and net["acltype"] == "Account"
    assert net["networkofferingname"] == DEFAULT and net["zonename"] == "z1"
    assert net["restartrequired"] is False and net["redundantrouter"] is False
    assert net["networkdomain"].startswith("cs") and net["networkdomain"].endswith("cloud.internal")
    assert {"SourceNat", "Dhcp", "Dns"} <= {s["name"] for s in net["service"]}

    # The admin's own listing is empty (not its networks); listall shows alice's.
    assert await call(admin, "listNetworks") == {}
    assert [n["id"] for n in (await call(admin, "listNetworks", listall=True))["network"]] == \
        [net["id"]]
    mine = await call(alice, "listNetworks", zoneid=zone["id"], type="Isolated")
    assert mine["count"] == 1 and mine["network"][0]["id"] == net["id"]
    by_account = await call(admin, "listNetworks", account="alice",
                            domainid=account["domainid"])
    assert by_account["count"] == 1
    assert await call(alice, "listNetworks", keyword="nomatch") == {}

    updated = (await call(alice, "updateNetwork", id=net["id"], displaytext="the web",
                          networkdomain="web.example"))["network"]
    assert updated["displaytext"] == "the web" and updated["networkdomain"] == "web.example"
    assert (await call(alice, "restartNetwork", id=net["id"], cleanup=True))["success"]
    err = await api_error(call(admin, "deleteZone", id=zone["id"]))
    assert err["errorcode"] == 536 and "1 guest network(s)" in err["errortext"]
    assert (await call(alice, "deleteNetwork", id=net["id"]))["success"]
    assert await call(alice, "listNetworks") == {}
    await call(admin, "deleteZone", id=zone["id"])


async def test_given_subnet_owner_and_checks(world):
    admin, alice, zone, offering, account = world
    net = (await call(admin, "createNetwork", name="n2", zoneid=zone["id"],
                      networkofferingid=offering["id"], gateway="192.168.5.1",
                      netmask="255.255.255.0", startip="192.168.5.10", endip="192.168.5.99",
                      account="alice", domainid=account["domainid"], dns1="203.0.113.53"))[
        "network"]
    assert (net["cidr"], net["account"], net["dns1"]) == ("192.168.5.0/24", "alice",
                                                          "203.0.113.53")
    bad = [
        dict(gateway="192.168.5.1"),  # without netmask
        dict(gateway="192.168.5.300", netmask="255.255.255.0"),
        dict(gateway="192.168.5.1", netmask="255.0.255.0"),
        dict(gateway="192.168.5.0", netmask="255.255.255.0"),  # the network address
        dict(gateway="192.168.5.1", netmask="255.255.255.0", startip="10.0.0.5"),
        dict(dns1="not-an-ip"),
        dict(networkdomain="bad domain"),
    ]
    for extra in bad:
        err = await api_error(call(admin, "createNetwork", name="x", zoneid=zone["id"],
                                   networkofferingid=offering["id"], **extra))
        assert err["errorcode"] == 431, extra
    # The offering must be Enabled and Isolated (not for VPC tiers).
    [vpc_tier] = (await call(admin, "listNetworkOfferings", forvpc=True))["networkoffering"]
    err = await api_error(call(admin, "createNetwork", name="x", zoneid=zone["id"],
                               networkofferingid=vpc_tier["id"]))
    assert err["errorcode"] == 431
    await call(admin, "updateNetworkOffering", id=offering["id"], state="Disabled")
    err = await api_error(call(admin, "createNetwork", name="x", zoneid=zone["id"],
                               networkofferingid=offering["id"]))
    assert err["errorcode"] == 431 and "not Enabled" in err["errortext"]
    # An unknown id is refused before a job exists.
    raw = CloudStack(admin.endpoint, key=admin.key, secret=admin.secret, fetch_result=False)
    err = await api_error(call(raw, "deleteNetwork", id=MISSING))
    assert err["errorcode"] == 431 and MISSING in err["errortext"]


async def test_an_offering_in_use_is_not_deleted(world):
    admin, alice, zone, _, _ = world
    offering = (await call(
        admin, "createNetworkOffering", name="Mine", displaytext="mine",
        guestiptype="Isolated", traffictype="GUEST", supportedservices="Dhcp,Dns,SourceNat",
        **{f"serviceproviderlist[{i}].{k}": v for i, service in enumerate(("Dhcp", "Dns",
           "SourceNat")) for k, v in (("service", service), ("provider", "VirtualRouter"))},
    ))["networkoffering"]
    await call(admin, "updateNetworkOffering", id=offering["id"], state="Enabled")
    net = (await call(alice, "createNetwork", name="n", zoneid=zone["id"],
                      networkofferingid=offering["id"]))["network"]
    err = await api_error(call(admin, "deleteNetworkOffering", id=offering["id"]))
    assert err["errorcode"] == 431 and "used by 1 networks" in err["errortext"]
    await call(alice, "deleteNetwork", id=net["id"])
    assert (await call(admin, "deleteNetworkOffering", id=offering["id"]))["success"]
