"""listCapacity on a live server with the cs client (SQLite or PostgreSQL, as
SKIFF_TEST_DB says)."""

from __future__ import annotations

import asyncio

from conftest import CORES, GIB, MEMORY, MHZ, World, add_host, api_error, call
from cs.client import CloudStack
from sqlalchemy import update

from mgmt.db.models.infra import PublicIp

MIB = 1024**2


def by_type(answer: dict) -> dict[int, dict]:
    return {c["type"]: c for c in answer["capacity"]}


async def public_range(world: World, first: str, last: str) -> None:
    cs, zone = world.cs, world.zone
    pn = (await call(cs, "createPhysicalNetwork", zoneid=zone["id"], name="pn1",
                     isolationmethods="VXLAN", vlan="1000-1999"))["physicalnetwork"]
    await call(cs, "addTrafficType", physicalnetworkid=pn["id"], traffictype="Public")
    await call(cs, "createVlanIpRange", zoneid=zone["id"], gateway="203.0.113.1",
               netmask="255.255.255.0", startip=first, endip=last)


async def test_a_zone_shows_what_its_hosts_have_and_what_instances_hold(world: World):
    await world.hold("h1", cpu_number=2, cpu_speed=1000, memory=2048)  # Running
    await world.hold("h2", cpu_speed=500, memory=512, state="Starting")
    await world.hold("h3", memory=1024, state="Migrating")
    await world.hold("h3", memory=1024, state="Stopping")
    # These hold nothing: stopped, destroyed, in error, not placed.
    for state in ("Stopped", "Destroyed", "Expunging", "Error"):
        await world.hold("h1", cpu_number=4, memory=4096, state=state)
    await world.hold(None, cpu_number=4, memory=4096, state="Starting")
    await public_range(world, "203.0.113.10", "203.0.113.19")
    async with world.live.db.sessions() as session:
        await session.execute(
            update(PublicIp)
            .where(PublicIp.address.in_(["203.0.113.10", "203.0.113.11", "203.0.113.12"]))
            .values(state="Allocated"))
        await session.commit()

    answer = await call(world.cs, "listCapacity", zoneid=world.zone["id"])
    assert answer["count"] == 4
    assert [c["type"] for c in answer["capacity"]] == [0, 1, 4, 90]
    caps = by_type(answer)
    for c in caps.values():
        assert (c["zoneid"], c["zonename"]) == (world.zone["id"], "z1")
        assert "podid" not in c and "clusterid" not in c
        assert c["capacityallocated"] == c["capacityused"]
    used_mib = 2048 + 512 + 1024 + 1024
    assert caps[0]["name"] == "MEMORY"
    assert caps[0]["capacitytotal"] == 3 * MEMORY
    assert caps[0]["capacityused"] == used_mib * MIB
    assert caps[0]["percentused"] == f"{used_mib * MIB * 100 / (3 * MEMORY):.2f}"
    assert caps[1]["name"] == "CPU"
    assert caps[1]["capacitytotal"] == 3 * CORES * MHZ
    assert caps[1]["capacityused"] == 2000 + 500 + 1000 + 1000
    assert caps[1]["percentused"] == "18.75"
    assert (caps[4]["capacitytotal"], caps[4]["capacityused"]) == (10, 3)
    assert caps[4]["percentused"] == "30.00"
    assert caps[4]["name"] == "VIRTUAL_NETWORK_PUBLIC_IP"
    assert (caps[90]["capacitytotal"], caps[90]["capacityused"]) == (3 * CORES, 2 + 1 + 1 + 1)


async def test_over_provisioning_factors_multiply_the_totals(world: World):
    await world.hold("h1", cpu_number=2, cpu_speed=1500, memory=1024)
    await world.configure("cpu.overprovisioning.factor", "2")
    await world.configure("mem.overprovisioning.factor", "1.5")
    caps = by_type(await call(world.cs, "listCapacity", zoneid=world.zone["id"]))
    assert caps[1]["capacitytotal"] == 2 * 3 * CORES * MHZ
    assert caps[1]["percentused"] == "6.25"  # 3000 of 48000
    assert caps[0]["capacitytotal"] == int(1.5 * 3 * MEMORY)
    assert caps[90]["capacitytotal"] == 3 * CORES  # cores are not over-provisioned
    # Another zone keeps the global factor.
    z2 = (await call(world.cs, "createZone", name="z2", networktype="Advanced"))["zone"]
    p2 = (await call(world.cs, "createPod", zoneid=z2["id"], name="p1", gateway="10.2.0.1",
                     netmask="255.255.255.0"))["pod"]
    c2 = (await call(world.cs, "addCluster", zoneid=z2["id"], podid=p2["id"], clustername="c1",
                     clustertype="CloudManaged", hypervisor="Netns"))["cluster"][0]
    await call(world.cs, "updateZone", id=z2["id"], allocationstate="Enabled")
    other = await add_host(world.cs, z2, p2, c2, "capz2")
    caps2 = by_type(await call(world.cs, "listCapacity", zoneid=z2["id"]))
    assert caps2[1]["capacitytotal"] == other["cpunumber"] * other["cpuspeed"]


async def test_only_hosts_that_take_instances_count(world: World):
    await world.hold("h2", memory=1024)
    await world.hold("h3", memory=2048)
    await call(world.cs, "updateHost", id=world.hosts["h2"]["id"], allocationstate="Disable")
    await call(world.cs, "prepareHostForMaintenance", id=world.hosts["h3"]["id"])
    caps = by_type(await call(world.cs, "listCapacity", zoneid=world.zone["id"]))
    assert caps[1]["capacitytotal"] == CORES * MHZ and caps[1]["capacityused"] == 0
    assert caps[0]["capacitytotal"] == MEMORY and caps[0]["capacityused"] == 0
    await world.set_host("h1", state="Down")
    caps = by_type(await call(world.cs, "listCapacity", zoneid=world.zone["id"]))
    assert caps[1]["capacitytotal"] == 0 and caps[1]["percentused"] == "0.00"
    await call(world.cs, "cancelHostMaintenance", id=world.hosts["h3"]["id"])
    caps = by_type(await call(world.cs, "listCapacity", zoneid=world.zone["id"]))
    assert caps[0]["capacitytotal"] == MEMORY and caps[0]["capacityused"] == 2048 * MIB


async def test_pod_and_cluster_capacity_name_the_pod_and_cluster(world: World):
    c2 = (await call(world.cs, "addCluster", zoneid=world.zone["id"], podid=world.pod["id"],
                     clustername="c2", clustertype="CloudManaged",
                     hypervisor="Netns"))["cluster"][0]
    h4 = await add_host(world.cs, world.zone, world.pod, c2, "caph4")
    await world.track("h4", h4)
    await world.set_host("h4", cpu_number=2, cpu_speed=1000, memory_total=GIB)
    await world.hold("h4", cpu_speed=500, memory=256)
    await world.hold("h1", cpu_speed=1000, memory=256)

    pod = await call(world.cs, "listCapacity", podid=world.pod["id"])
    assert [c["type"] for c in pod["capacity"]] == [0, 1, 90]  # public IPs are zone-wide
    for c in pod["capacity"]:
        assert (c["podid"], c["podname"], c["zonename"]) == (world.pod["id"], "p1", "z1")
        assert "clusterid" not in c
    assert by_type(pod)[1]["capacitytotal"] == 3 * CORES * MHZ + 2000
    assert by_type(pod)[1]["capacityused"] == 1500

    cluster = await call(world.cs, "listCapacity", clusterid=c2["id"])
    for c in cluster["capacity"]:
        assert (c["clusterid"], c["clustername"], c["podname"]) == (c2["id"], "c2", "p1")
    caps = by_type(cluster)
    assert (caps[1]["capacitytotal"], caps[1]["capacityused"]) == (2000, 500)
    assert (caps[0]["capacitytotal"], caps[0]["capacityused"]) == (GIB, 256 * MIB)
    assert caps[0]["percentused"] == "25.00"

    # A disabled cluster offers nothing; its pod shows what is left.
    await call(world.cs, "updateCluster", id=c2["id"], allocationstate="Disabled")
    assert by_type(await call(world.cs, "listCapacity", clusterid=c2["id"]))[1][
        "capacitytotal"] == 0
    assert by_type(await call(world.cs, "listCapacity", podid=world.pod["id"]))[1][
        "capacitytotal"] == 3 * CORES * MHZ
    # A cluster outside the given zone or pod: nothing.
    z2 = (await call(world.cs, "createZone", name="z2", networktype="Advanced"))["zone"]
    assert await call(world.cs, "listCapacity", zoneid=z2["id"], clusterid=c2["id"]) == {}


async def test_every_zone_is_listed_filtered_by_type_sorted_and_paged(world: World):
    await world.hold("h1", cpu_number=4, cpu_speed=1000, memory=512)  # cores 33 %, CPU 17 %
    await call(world.cs, "createZone", name="z2", networktype="Advanced")  # no hosts
    every = await call(world.cs, "listCapacity")
    assert every["count"] == 8
    assert [(c["zonename"], c["type"]) for c in every["capacity"]] == [
        ("z1", 0), ("z1", 1), ("z1", 4), ("z1", 90), ("z2", 0), ("z2", 1), ("z2", 4), ("z2", 90)]
    z2 = [c for c in every["capacity"] if c["zonename"] == "z2"]
    assert all(c["capacitytotal"] == 0 and c["percentused"] == "0.00" for c in z2)

    cpu = await call(world.cs, "listCapacity", type=1)
    assert [(c["zonename"], c["type"]) for c in cpu["capacity"]] == [("z1", 1), ("z2", 1)]
    assert await call(world.cs, "listCapacity", type=2) == {}  # storage: not kept

    fullest = await call(world.cs, "listCapacity", zoneid=world.zone["id"], sortby="usage")
    assert [(c["type"], c["percentused"]) for c in fullest["capacity"]] == [
        (90, "33.33"), (1, "16.67"), (0, "2.08"), (4, "0.00")]

    page = await call(world.cs, "listCapacity", page=2, pagesize=3)
    assert page["count"] == 8
    assert [(c["zonename"], c["type"]) for c in page["capacity"]] == [
        ("z1", 90), ("z2", 0), ("z2", 1)]
    assert (await call(world.cs, "listCapacity", fetchlatest=True))["count"] == 8
    # keyword: a part of the type's or the zone's name.
    cpus = await call(world.cs, "listCapacity", keyword="cpu")
    assert [(c["zonename"], c["type"]) for c in cpus["capacity"]] == [
        ("z1", 1), ("z1", 90), ("z2", 1), ("z2", 90)]
    assert (await call(world.cs, "listCapacity", keyword="Z2"))["count"] == 4


async def test_refusals(world: World):
    missing = "00000000-0000-0000-0000-000000000000"
    err = await api_error(call(world.cs, "listCapacity", zoneid=missing))
    assert err["errorcode"] == 431 and f"zone with id {missing}" in err["errortext"]
    err = await api_error(call(world.cs, "listCapacity", sortby="name"))
    assert err["errorcode"] == 431 and "sortby" in err["errortext"]
    account = (await call(world.cs, "createAccount", username="u1", password="pw",
                          email="u@x.test", firstname="U", lastname="One"))["account"]
    keys = (await call(world.cs, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    user = CloudStack(world.live.url, key=keys["apikey"], secret=keys["secretkey"])
    err = await api_error(asyncio.to_thread(user.listCapacity))
    assert err["errorcode"] == 432


async def test_a_netns_host_offers_this_machines_cores_and_memory(world: World):
    h = await add_host(world.cs, world.zone, world.pod, world.cluster, "capre")
    assert h["cpunumber"] >= 1 and h["cpuspeed"] > 0 and h["memorytotal"] > 0
    caps = by_type(await call(world.cs, "listCapacity", zoneid=world.zone["id"]))
    assert caps[1]["capacitytotal"] == 3 * CORES * MHZ + h["cpunumber"] * h["cpuspeed"]
    assert caps[0]["capacitytotal"] == 3 * MEMORY + h["memorytotal"] // MIB * MIB
