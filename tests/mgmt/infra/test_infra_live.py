"""Pods, clusters, hosts, physical networks, traffic types and public IP ranges,
driven through a live server with the real cs client (SQLite or PostgreSQL, as
SKIFF_TEST_DB says)."""

from __future__ import annotations

import asyncio
import time

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import func, inspect, select

from mgmt.db.models import Event
from mgmt.db.models.infra import PublicIp

INFRA_TABLES = {
    "pods", "clusters", "hosts", "physical_networks", "traffic_types", "service_providers",
    "vlan_ip_ranges", "public_ips",
}


def admin_client(live) -> CloudStack:
    return CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                      poll_interval=0.1, fetch_result=True)


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def fails(client, command_name, /, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await call(client, command_name, **params)
    return err.value.error


async def user_client(live, admin, name: str) -> CloudStack:
    account = (await call(admin, "createAccount", username=name, password=f"pw-{name}",
                          email=f"{name}@x.test", firstname=name, lastname="T"))["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"], poll_interval=0.1,
                      fetch_result=True)


async def zone_pod_cluster(cs, zone="z1", hypervisor="KVM") -> tuple[dict, dict, dict]:
    z = (await call(cs, "createZone", name=zone, networktype="Advanced"))["zone"]
    p = (await call(cs, "createPod", zoneid=z["id"], name="p1", gateway="10.1.0.1",
                    netmask="255.255.255.0", startip="10.1.0.10", endip="10.1.0.20"))["pod"]
    c = (await call(cs, "addCluster", zoneid=z["id"], podid=p["id"], clustername="c1",
                    clustertype="CloudManaged", hypervisor=hypervisor))["cluster"][0]
    return z, p, c


async def public_network(cs, zone: dict) -> dict:
    """A physical network carrying Public and Guest traffic."""
    pn = (await call(cs, "createPhysicalNetwork", zoneid=zone["id"], name="pn1",
                     isolationmethods="VXLAN", vlan="1000-1999"))["physicalnetwork"]
    for traffic in ("Public", "Guest"):
        await call(cs, "addTrafficType", physicalnetworkid=pn["id"], traffictype=traffic,
                   kvmnetworklabel="br-" + traffic.lower())
    return pn


async def test_the_whole_chain_and_back(live):
    cs = admin_client(live)
    z, p, c = await zone_pod_cluster(cs)
    assert p["zonename"] == "z1" and p["startip"] == ["10.1.0.10"]
    assert c["hypervisortype"] == "KVM" and c["podname"] == "p1"
    assert c["clustertype"] == "CloudManaged" and c["allocationstate"] == "Enabled"

    added = await call(cs, "addHost", zoneid=z["id"], podid=p["id"], clusterid=c["id"],
                       url="http://10.1.0.50", username="root", password="s3cret",
                       hypervisor="KVM", hosttags="fast,ssd")
    assert added["count"] == 1
    [host] = added["host"]
    assert host["state"] == "Up" and host["resourcestate"] == "Enabled"
    assert host["type"] == "Routing" and host["ipaddress"] == "10.1.0.50"
    assert host["hosttags"] == "fast,ssd"
    listed = (await call(cs, "listHosts", id=host["id"]))["host"][0]
    for field in ("id", "name", "state", "resourcestate", "type", "ipaddress", "hypervisor",
                  "clusterid", "clustername", "podid", "podname", "zoneid", "zonename",
                  "cpunumber", "cpuspeed", "memorytotal", "created", "hosttags"):
        assert field in listed, field
    assert (listed["clustername"], listed["podname"], listed["zonename"]) == ("c1", "p1", "z1")
    assert "password" not in listed and "s3cret" not in str(listed)

    # Physical network (async), traffic types (async), the VirtualRouter provider.
    pn = (await call(cs, "createPhysicalNetwork", zoneid=z["id"], name="pn1",
                     isolationmethods="VXLAN", vlan="1000-1999",
                     broadcastdomainrange="ZONE"))["physicalnetwork"]
    assert pn["state"] == "Disabled" and pn["isolationmethods"] == "VXLAN"
    assert pn["vlan"] == "1000-1999" and pn["zonename"] == "z1"
    for traffic in ("Public", "Guest", "Management"):
        tt = (await call(cs, "addTrafficType", physicalnetworkid=pn["id"], traffictype=traffic,
                         kvmnetworklabel="cloudbr0"))["traffictype"]
        assert tt["traffictype"] == traffic and tt["kvmnetworklabel"] == "cloudbr0"
    types = await call(cs, "listTrafficTypes", physicalnetworkid=pn["id"])
    assert types["count"] == 3
    assert {t["traffictype"] for t in types["traffictype"]} == {"Public", "Guest", "Management"}

    nsps = (await call(cs, "listNetworkServiceProviders", physicalnetworkid=pn["id"]))
    vr = next(n for n in nsps["networkserviceprovider"] if n["name"] == "VirtualRouter")
    assert vr["state"] == "Disabled" and "SourceNat" in vr["servicelist"]
    err = await fails(cs, "updateNetworkServiceProvider", id=vr["id"], state="Enabled")
    assert err["errorcode"] == 431 and "configureVirtualRouterElement" in err["errortext"]
    [element] = (await call(cs, "listVirtualRouterElements", nspid=vr["id"]))[
        "virtualrouterelement"]
    assert element["enabled"] is False
    element = (await call(cs, "configureVirtualRouterElement", id=element["id"],
                          enabled=True))["virtualrouterelement"]
    assert element["enabled"] is True
    vr = (await call(cs, "updateNetworkServiceProvider", id=vr["id"], state="Enabled"))[
        "networkserviceprovider"]
    assert vr["state"] == "Enabled"
    pn = (await call(cs, "updatePhysicalNetwork", id=pn["id"], state="Enabled"))[
        "physicalnetwork"]
    assert pn["state"] == "Enabled"

    # Public range: one public_ips row per address.
    vlan = (await call(cs, "createVlanIpRange", zoneid=z["id"], vlan="untagged",
                       gateway="203.0.113.1", netmask="255.255.255.0", startip="203.0.113.10",
                       endip="203.0.113.59", forvirtualnetwork=True))["vlan"]
    assert vlan["physicalnetworkid"] == pn["id"] and vlan["vlan"] == "vlan://untagged"
    assert (vlan["startip"], vlan["endip"], vlan["cidr"]) == ("203.0.113.10", "203.0.113.59",
                                                              "203.0.113.0/24")
    assert (await call(cs, "listVlanIpRanges", zoneid=z["id"]))["vlaniprange"][0]["id"] == \
        vlan["id"]
    async with live.db.sessions() as session:
        rows = (await session.scalars(select(PublicIp).order_by(PublicIp.id))).all()
    assert len(rows) == 50 and {r.state for r in rows} == {"Free"}
    assert rows[0].address == "203.0.113.10" and rows[-1].address == "203.0.113.59"
    assert all(r.account_id is None and r.network_id is None for r in rows)

    # A zone with contents is not deleted.
    err = await fails(cs, "deleteZone", id=z["id"])
    assert err["errorcode"] == 536
    assert "pod" in err["errortext"] and "public IP range" in err["errortext"]
    err = await fails(cs, "deletePhysicalNetwork", id=pn["id"])
    assert err["errorcode"] == 536 and "public IP range" in err["errortext"]

    # Tear down in order; each object vanishes from its listing.
    await call(cs, "deleteVlanIpRange", id=vlan["id"])
    assert await call(cs, "listVlanIpRanges") == {}
    async with live.db.sessions() as session:
        assert await session.scalar(
            select(func.count()).select_from(PublicIp).where(PublicIp.live())) == 0
    await call(cs, "deleteTrafficType", id=types["traffictype"][2]["id"])
    assert (await call(cs, "listTrafficTypes", physicalnetworkid=pn["id"]))["count"] == 2
    await call(cs, "deletePhysicalNetwork", id=pn["id"])
    assert await call(cs, "listPhysicalNetworks") == {}

    err = await fails(cs, "deleteHost", id=host["id"])
    assert err["errorcode"] == 536 and "maintenance" in err["errortext"]
    err = await fails(cs, "deleteCluster", id=c["id"])
    assert err["errorcode"] == 536 and "1 host" in err["errortext"]
    in_maint = (await call(cs, "prepareHostForMaintenance", id=host["id"]))["host"]
    assert in_maint["resourcestate"] == "Maintenance"
    await call(cs, "deleteHost", id=host["id"])
    assert await call(cs, "listHosts") == {}
    err = await fails(cs, "deletePod", id=p["id"])
    assert err["errorcode"] == 536 and "cluster" in err["errortext"]
    await call(cs, "deleteCluster", id=c["id"])
    assert await call(cs, "listClusters") == {}
    await call(cs, "deletePod", id=p["id"])
    assert await call(cs, "listPods") == {}
    await call(cs, "deleteZone", id=z["id"])

    async with live.db.sessions() as session:
        types_seen = set(await session.scalars(select(Event.type)))
    assert {"POD.CREATE", "POD.DELETE", "CLUSTER.CREATE", "HOST.ADD", "HOST.DELETE",
            "MAINT.PREPARE", "PHYSICAL.NETWORK.CREATE", "PHYSICAL.NETWORK.UPDATE",
            "PHYSICAL.NETWORK.DELETE", "TRAFFIC.TYPE.CREATE", "TRAFFIC.TYPE.DELETE",
            "SERVICE.PROVIDER.UPDATE", "VLAN.IP.RANGE.CREATE", "VLAN.IP.RANGE.DELETE",
            "ZONE.DELETE"} <= types_seen


async def test_host_listing_filters_paging_and_states(live):
    cs = admin_client(live)
    z, p, kvm = await zone_pod_cluster(cs)
    lab = (await call(cs, "addCluster", zoneid=z["id"], podid=p["id"], clustername="lab",
                      clustertype="CloudManaged", hypervisor="netns"))["cluster"][0]
    assert lab["hypervisortype"] == "Netns"  # choices are matched case-insensitively
    ids = []
    for i in range(3):
        h = await call(cs, "addHost", zoneid=z["id"], podid=p["id"], clusterid=kvm["id"],
                       url=f"http://kvm{i}.lab.test", username="root", password="pw",
                       hypervisor="KVM", hosttags="gold" if i == 0 else "")
        ids.append(h["host"][0]["id"])
    for i in range(2):
        h = await call(cs, "addHost", zoneid=z["id"], podid=p["id"], clustername="lab",
                       url=f"netns://tlab{i}", hypervisor="Netns")
        ids.append(h["host"][0]["id"])
        assert h["host"][0]["cpunumber"] >= 1 and h["host"][0]["memorytotal"] > 0

    page1 = await call(cs, "listHosts", page=1, pagesize=2)
    page3 = await call(cs, "listHosts", page=3, pagesize=2)
    assert page1["count"] == page3["count"] == 5
    assert len(page1["host"]) == 2 and len(page3["host"]) == 1
    assert [h["id"] for h in page1["host"]] == ids[:2] and page3["host"][0]["id"] == ids[4]
    assert (await call(cs, "listHosts", hypervisor="Netns"))["count"] == 2
    assert (await call(cs, "listHosts", clusterid=kvm["id"]))["count"] == 3
    assert (await call(cs, "listHosts", podid=p["id"], zoneid=z["id"], type="Routing",
                       state="Up"))["count"] == 5
    assert (await call(cs, "listHosts", state="Disconnected")) == {}
    assert [h["id"] for h in (await call(cs, "listHosts", hosttags="gold"))["host"]] == [ids[0]]
    assert (await call(cs, "listHosts", keyword="kvm"))["count"] == 3

    disabled = (await call(cs, "updateHost", id=ids[1], allocationstate="Disable",
                           hosttags="silver"))["host"]
    assert disabled["resourcestate"] == "Disabled" and disabled["hosttags"] == "silver"
    assert [h["id"] for h in (await call(cs, "listHosts", resourcestate="Disabled"))["host"]] \
        == [ids[1]]
    await call(cs, "prepareHostForMaintenance", id=ids[2])
    assert [h["id"] for h in (await call(cs, "listHosts", resourcestate="Maintenance"))["host"]] \
        == [ids[2]]
    err = await fails(cs, "updateHost", id=ids[2], allocationstate="Enable")
    assert err["errorcode"] == 431 and "allocationstate" in err["errortext"]
    back = (await call(cs, "cancelHostMaintenance", id=ids[2]))["host"]
    assert back["resourcestate"] == "Enabled"
    err = await fails(cs, "cancelHostMaintenance", id=ids[2])
    assert err["errorcode"] == 431 and "not in maintenance" in err["errortext"]

    await call(cs, "deleteHost", id=ids[4], forced=True)
    assert (await call(cs, "listHosts"))["count"] == 4
    assert (await call(cs, "listClusters", hypervisor="Netns"))["cluster"][0]["id"] == lab["id"]
    upd = (await call(cs, "updateCluster", id=lab["id"], allocationstate="Disabled"))["cluster"]
    assert upd["allocationstate"] == "Disabled"
    assert (await call(cs, "listClusters", allocationstate="Disabled"))["count"] == 1
    assert (await call(cs, "listClusters", podid=p["id"]))["count"] == 2

    p2 = (await call(cs, "createPod", zoneid=z["id"], name="p2", gateway="10.2.0.1",
                     netmask="255.255.255.0"))["pod"]
    assert (await call(cs, "listPods", zoneid=z["id"]))["count"] == 2
    assert (await call(cs, "listPods", name="p2"))["pod"][0]["id"] == p2["id"]
    upd = (await call(cs, "updatePod", id=p2["id"], name="p2b", allocationstate="Disabled",
                      startip="10.2.0.5", endip="10.2.0.9"))["pod"]
    assert (upd["name"], upd["allocationstate"], upd["endip"]) == ("p2b", "Disabled",
                                                                   ["10.2.0.9"])
    hypervisors = (await call(cs, "listHypervisors"))["hypervisor"]
    assert [h["name"] for h in hypervisors] == ["KVM", "Netns"]


async def test_validation_errors_name_the_parameter(live):
    cs = admin_client(live)
    z, p, c = await zone_pod_cluster(cs)
    cases = [
        (("createPod", dict(zoneid=z["id"], name="bad", gateway="10.9.0.1",
                            netmask="255.255.255.0", startip="10.8.0.5")), "startip"),
        (("createPod", dict(zoneid=z["id"], name="bad", gateway="10.9.0.1",
                            netmask="255.255.255.0", startip="10.9.0.9", endip="10.9.0.5")),
         "startip"),
        (("createPod", dict(zoneid=z["id"], name="bad", gateway="10.9.0.1",
                            netmask="255.0.255.0")), "netmask"),
        (("createPod", dict(zoneid=z["id"], name="p1", gateway="10.9.0.1",
                            netmask="255.255.255.0")), "exists already"),
        (("addCluster", dict(zoneid=z["id"], podid=p["id"], clustername="x",
                             clustertype="CloudManaged", hypervisor="XenServer")), "hypervisor"),
        (("addHost", dict(zoneid=z["id"], podid=p["id"], clusterid=c["id"], url="http://h1",
                          username="u", password="p", hypervisor="VMware")), "hypervisor"),
        (("addHost", dict(zoneid=z["id"], podid=p["id"], clusterid=c["id"], url="http://h1",
                          hypervisor="KVM")), "password"),
        (("addHost", dict(zoneid=z["id"], podid=p["id"], clusterid=c["id"], url="http://h1",
                          username="u", password="p", hypervisor="Netns")), "hypervisor"),
        (("addHost", dict(zoneid=z["id"], podid=p["id"], url="http://h1", username="u",
                          password="p", hypervisor="KVM")), "clusterid"),
        (("addHost", dict(zoneid=z["id"], clusterid=c["id"], url="http://h1", username="u",
                          password="p", hypervisor="KVM")), "podid"),
        (("createPhysicalNetwork", dict(zoneid=z["id"], name="x", isolationmethods="FOO")),
         "isolationmethods"),
        (("createPhysicalNetwork", dict(zoneid=z["id"], name="x", vlan="5000-5001")), "vlan"),
        (("createPhysicalNetwork", dict(zoneid=z["id"], name="x", vlan="abc")), "vlan"),
        (("createPod", dict(zoneid="00000000-0000-0000-0000-000000000000", name="x",
                            gateway="10.9.0.1", netmask="255.255.255.0")), "zone"),
    ]
    for (name, params), word in cases:
        err = await fails(cs, name, **params)
        assert err["errorcode"] == 431, (name, params, err)
        assert word in err["errortext"], (name, params, err)

    # Public ranges need a physical network carrying Public traffic.
    err = await fails(cs, "createVlanIpRange", zoneid=z["id"], gateway="203.0.113.1",
                      netmask="255.255.255.0", startip="203.0.113.10", endip="203.0.113.20")
    assert err["errorcode"] == 431 and "physicalnetworkid" in err["errortext"]
    pn = await public_network(cs, z)
    err = await fails(cs, "addTrafficType", physicalnetworkid=pn["id"], traffictype="Public")
    assert err["errorcode"] == 431 and "traffictype" in err["errortext"]
    base = dict(zoneid=z["id"], gateway="203.0.113.1", netmask="255.255.255.0")
    first = (await call(cs, "createVlanIpRange", startip="203.0.113.10", endip="203.0.113.20",
                        vlan="100", **base))["vlan"]
    assert first["vlan"] == "vlan://100"
    ranges = [
        (dict(startip="203.0.113.10", endip="203.0.114.20"), "endip"),
        (dict(startip="198.51.100.10", endip="203.0.113.20"), "startip"),
        (dict(startip="203.0.113.30", endip="203.0.113.25"), "startip"),
        (dict(startip="203.0.113.0", endip="203.0.113.5"), "gateway"),
        (dict(startip="203.0.113.300"), "startip"),
        (dict(startip="203.0.113.100", vlan="5000"), "vlan"),
        (dict(startip="203.0.113.15", endip="203.0.113.40"), first["id"]),
        (dict(startip="203.0.113.5", endip="203.0.113.10"), "overlaps"),
    ]
    for params, word in ranges:
        err = await fails(cs, "createVlanIpRange", **{**base, **params})
        assert err["errorcode"] == 431, (params, err)
        assert word in err["errortext"], (params, err)
    # Adjacent is fine; so is the same range in another zone.
    await call(cs, "createVlanIpRange", startip="203.0.113.21", endip="203.0.113.30", **base)
    z2 = (await call(cs, "createZone", name="z2", networktype="Advanced"))["zone"]
    await public_network(cs, z2)
    await call(cs, "createVlanIpRange", **{**base, "zoneid": z2["id"]},
               startip="203.0.113.10", endip="203.0.113.20")
    assert (await call(cs, "listVlanIpRanges", zoneid=z["id"]))["count"] == 2
    assert (await call(cs, "listVlanIpRanges"))["count"] == 3
    assert (await call(cs, "listVlanIpRanges", vlan="100"))["count"] == 1
    assert (await call(cs, "listVlanIpRanges", pagesize=1, page=2))["count"] == 3


async def test_an_allocated_address_keeps_its_range(live):
    cs = admin_client(live)
    z, _p, _c = await zone_pod_cluster(cs)
    await public_network(cs, z)
    vlan = (await call(cs, "createVlanIpRange", zoneid=z["id"], gateway="198.51.100.1",
                       netmask="255.255.255.0", startip="198.51.100.2",
                       endip="198.51.100.9"))["vlan"]
    async with live.db.sessions() as session:
        ip = await session.scalar(select(PublicIp).where(PublicIp.address == "198.51.100.5"))
        ip.state = "Allocated"
        await session.commit()
    err = await fails(cs, "deleteVlanIpRange", id=vlan["id"])
    assert err["errorcode"] == 536 and "allocated" in err["errortext"]
    async with live.db.sessions() as session:  # nothing was removed
        assert await session.scalar(select(func.count()).select_from(PublicIp).where(
            PublicIp.live())) == 8
    assert (await call(cs, "listVlanIpRanges"))["count"] == 1


async def test_a_slash_16_range_is_inserted_in_bulk(live):
    cs = admin_client(live)
    z, _p, _c = await zone_pod_cluster(cs)
    await public_network(cs, z)
    started = time.monotonic()
    vlan = (await call(cs, "createVlanIpRange", zoneid=z["id"], gateway="100.64.0.1",
                       netmask="255.255.0.0", startip="100.64.0.2",
                       endip="100.64.255.254"))["vlan"]
    took = time.monotonic() - started
    async with live.db.sessions() as session:
        n = await session.scalar(select(func.count()).select_from(PublicIp))
    assert n == 65_533
    assert took < 15, f"a /16 took {took:.1f} s"
    err = await fails(cs, "createVlanIpRange", zoneid=z["id"], gateway="100.0.0.1",
                      netmask="255.0.0.0", startip="100.0.0.2", endip="100.2.0.2")
    assert err["errorcode"] == 431 and "endip" in err["errortext"] and "65536" in \
        err["errortext"]
    started = time.monotonic()
    await call(cs, "deleteVlanIpRange", id=vlan["id"])
    assert time.monotonic() - started < 15


async def test_a_user_can_neither_change_nor_list_infrastructure(live):
    admin = admin_client(live)
    z, p, c = await zone_pod_cluster(admin)
    await call(admin, "addHost", zoneid=z["id"], podid=p["id"], clusterid=c["id"],
               url="http://10.1.0.60", username="root", password="pw", hypervisor="KVM")
    user = await user_client(live, admin, "ursula")
    refused = [
        ("createPod", dict(zoneid=z["id"], name="x", gateway="10.3.0.1",
                           netmask="255.255.255.0")),
        ("addCluster", dict(zoneid=z["id"], podid=p["id"], clustername="x",
                            clustertype="CloudManaged", hypervisor="KVM")),
        ("addHost", dict(zoneid=z["id"], podid=p["id"], clusterid=c["id"], url="http://x",
                         username="u", password="p", hypervisor="KVM")),
        ("listHosts", {}), ("listPods", {}), ("listClusters", {}),
        ("listPhysicalNetworks", {}), ("listVlanIpRanges", {}),
        ("createPhysicalNetwork", dict(zoneid=z["id"], name="x")),
        ("createVlanIpRange", dict(zoneid=z["id"], gateway="203.0.113.1",
                                   netmask="255.255.255.0", startip="203.0.113.2")),
        ("deleteHost", dict(id=c["id"])),
        ("prepareHostForMaintenance", dict(id=c["id"])),
    ]
    for name, params in refused:
        err = await fails(user, name, **params)
        assert err["errorcode"] == 432, (name, err)
    assert [h["name"] for h in (await call(user, "listHypervisors"))["hypervisor"]] == \
        ["KVM", "Netns"]


async def test_the_infra_tables_exist_after_migration(live):
    def names(conn):
        return set(inspect(conn).get_table_names())

    async with live.db.engine.connect() as conn:
        assert await conn.run_sync(names) >= INFRA_TABLES
