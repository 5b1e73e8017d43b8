"""choose_host and place against the database of a live server: the zone's settings
(changed over the API) pick the algorithm and the factors, host states, clusters
and tags set over the API are honoured, and concurrent placements never overfill
a host (SQLite and PostgreSQL, as SKIFF_TEST_DB says)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import CORES, MHZ, World, api_error, call
from sqlalchemy import func, select

from mgmt.api.errors import ApiError
from mgmt.db.engine import Database, open_database
from mgmt.db.models.compute import VmInstance
from mgmt.orchestration.allocator import choose_host, place


async def chosen(world: World, **request) -> str:
    """The short name of the host choose_host picks (the transaction is rolled back)."""
    ask = {"cpu_number": 1, "cpu_speed": 1000, "memory_mib": 512, **request}
    async with world.live.db.sessions() as session:
        host = await choose_host(session, world.zone_id, **ask)
        return host.name.removeprefix("cap")


async def refused(world: World, **request) -> ApiError:
    with pytest.raises(ApiError) as err:
        await chosen(world, **request)
    assert err.value.code == 533 and err.value.cserrorcode == 4375
    return err.value


async def load_hosts(world: World) -> None:
    """h1 half full (CPU), h2 a quarter, h3 empty."""
    await world.hold("h1", cpu_number=4, cpu_speed=1000)
    await world.hold("h2", cpu_number=2, cpu_speed=1000)


async def test_the_zones_algorithm_picks_the_host(world: World):
    await load_hosts(world)
    assert await chosen(world) == "h1"  # firstfit, the default
    await world.configure("vm.allocation.algorithm", "fillfirst")
    assert await chosen(world) == "h1"
    assert await chosen(world, cpu_number=4, cpu_speed=1500) == "h2"  # h1 has 4000 MHz left
    await world.configure("vm.allocation.algorithm", "disperse")
    assert await chosen(world) == "h3"
    await world.configure("vm.allocation.algorithm", "firstfit")
    assert await chosen(world, cpu_number=4, cpu_speed=1500) == "h2"


async def test_an_algorithm_that_does_not_exist_is_refused(world: World):
    err = await api_error(call(world.cs, "updateConfiguration", name="vm.allocation.algorithm",
                               value="random", zoneid=world.zone["id"]))
    assert err["errorcode"] == 431 and "firstfit, fillfirst, disperse" in err["errortext"]


async def test_over_provisioning_makes_room(world: World):
    for h in ("h1", "h2", "h3"):
        await world.hold(h, cpu_number=4, cpu_speed=1800, memory=7 * 1024)
    err = await refused(world, cpu_speed=1000)
    assert err.text == (
        "Insufficient capacity: no host in zone z1 can take 1 CPU x 1000 MHz and 512 MiB "
        "(caph1: 800 of 8000 MHz free; caph2: 800 of 8000 MHz free; "
        "caph3: 800 of 8000 MHz free)"
    )
    await world.configure("cpu.overprovisioning.factor", "1.5")
    err = await refused(world, cpu_speed=1000, memory_mib=1536)
    assert "caph1: 1024 of 8192 MiB free" in err.text
    await world.configure("mem.overprovisioning.factor", "2")
    assert await chosen(world, cpu_speed=1000, memory_mib=1536) == "h1"


async def test_states_clusters_tags_and_avoid(world: World):
    cs, hosts = world.cs, world.hosts
    await call(cs, "prepareHostForMaintenance", id=hosts["h1"]["id"])
    await call(cs, "updateHost", id=hosts["h2"]["id"], allocationstate="Disable")
    assert await chosen(world) == "h3"
    await world.set_host("h3", state="Disconnected")
    err = await refused(world)
    assert "caph1: resource state Maintenance; caph2: resource state Disabled; " \
        "caph3: state Disconnected" in err.text

    await call(cs, "cancelHostMaintenance", id=hosts["h1"]["id"])
    await call(cs, "updateHost", id=hosts["h2"]["id"], allocationstate="Enable")
    await world.set_host("h3", state="Up")
    await call(cs, "updateHost", id=hosts["h2"]["id"], hosttags="ssd,gpu")
    await call(cs, "updateHost", id=hosts["h3"]["id"], hosttags="ssd")
    assert await chosen(world, tags=["ssd"]) == "h2"
    assert await chosen(world, tags=["ssd"], avoid=[world.host_ids["h2"]]) == "h3"
    err = await refused(world, tags=["ssd", "gpu"], avoid=[world.host_ids["h2"]])
    assert err.text.endswith(
        "with tags gpu,ssd (caph1: lacks tag(s) gpu,ssd; caph2: excluded by the "
        "caller; caph3: lacks tag(s) gpu)")
    err = await refused(world, hypervisor="KVM")
    assert "512 MiB on KVM (caph1: hypervisor Netns;" in err.text
    assert await chosen(world, hypervisor="Netns") == "h1"
    err = await refused(world, cpu_number=CORES + 1)
    assert f"has {CORES} core(s)" in err.text
    err = await refused(world, cpu_speed=MHZ + 1)
    assert f"cores run at {MHZ} MHz" in err.text

    await call(cs, "updateCluster", id=world.cluster["id"], allocationstate="Disabled")
    assert "caph1: cluster c1 is Disabled" in (await refused(world)).text
    await call(cs, "updateCluster", id=world.cluster["id"], allocationstate="Enabled")
    await call(cs, "updatePod", id=world.pod["id"], allocationstate="Disabled")
    assert "caph1: pod p1 is Disabled" in (await refused(world)).text
    await call(cs, "updatePod", id=world.pod["id"], allocationstate="Enabled")
    await call(cs, "updateZone", id=world.zone["id"], allocationstate="Disabled")
    assert "caph1: zone z1 is Disabled" in (await refused(world)).text


async def test_a_zone_without_hosts(world: World):
    for h in world.hosts.values():
        await call(world.cs, "deleteHost", id=h["id"], forced=True)
    err = await refused(world)
    assert err.text == ("Insufficient capacity: zone z1 has no hosts "
                        "(asked for 1 CPU x 1000 MHz and 512 MiB)")


async def test_place_reserves_at_once_and_a_retry_releases_its_own_reservation(world: World):
    await world.configure("vm.allocation.algorithm", "disperse")
    async with world.live.db.sessions() as session:
        first = await session.get_one(VmInstance, await world.hold(None, cpu_number=2,
                                                                   cpu_speed=2000,
                                                                   state="Stopped"))
        host = await place(session, first)
        assert first.host_id == host.id == world.host_ids["h1"]
        assert first.state == "Starting"
        await session.commit()
    # h1 is half full now: the next two go to the emptier hosts, also when placed in
    # one transaction (the first reservation counts for the second).
    async with world.live.db.sessions() as session:
        second = await session.get_one(VmInstance, await world.hold(None, state="Stopped"))
        third = await session.get_one(VmInstance, await world.hold(None, state="Stopped"))
        assert (await place(session, second)).id == world.host_ids["h2"]
        assert (await place(session, third)).id == world.host_ids["h3"]
        await session.commit()
    # Placing the first again (its start failed on h1): its own reservation does not
    # count, so h1 is the emptiest host unless the caller avoids it.
    async with world.live.db.sessions() as session:
        first = await session.get_one(VmInstance, first.id)
        assert (await place(session, first)).id == world.host_ids["h1"]
        assert (await place(session, first, avoid=[world.host_ids["h1"]])).id == \
            world.host_ids["h2"]
        await session.rollback()


async def test_concurrent_placements_never_overfill_a_host(world: World):
    """Eight jobs on two servers' engines race for room for three: exactly three get a
    host. (Without the lock in choose_host, all eight do, on either database.)"""
    await world.set_host("h2", resource_state="Disabled")
    await world.set_host("h3", resource_state="Disabled")
    await world.set_host("h1", cpu_number=3, cpu_speed=1000)
    placed: list[int] = []
    other_server = await open_database(world.live.db_url, migrate=False)

    async def job(db: Database) -> str:
        async with db.sessions() as session:
            try:
                host = await choose_host(session, world.zone_id, cpu_number=1,
                                         cpu_speed=1000, memory_mib=256)
            except ApiError as exc:
                return str(exc.code)
            for _ in range(5):  # let the other jobs run between check and commit
                await asyncio.sleep(0)
            vm = VmInstance(name=f"race-{len(placed)}-{id(session)}", state="Starting",
                            account_id=world.account_id, domain_id=world.domain_id,
                            zone_id=world.zone_id, host_id=host.id, cpu_number=1,
                            cpu_speed=1000, memory=256)
            session.add(vm)
            await session.commit()
            placed.append(vm.id)
            return "placed"

    try:
        results = await asyncio.gather(
            *(job(world.live.db if i % 2 else other_server) for i in range(8)))
    finally:
        await other_server.close()
    assert sorted(results) == ["533"] * 5 + ["placed"] * 3
    async with world.live.db.sessions() as session:
        on_h1 = await session.scalar(
            select(func.count()).select_from(VmInstance)
            .where(VmInstance.host_id == world.host_ids["h1"]))
    assert on_h1 == 3


async def test_concurrent_routers_on_one_host_get_distinct_control_addresses(world: World):
    """Six routers on one host, started by two servers' engines at once, each take a
    control address no other holds (routers.start: lock_host, then free_control_ip)."""
    import ipaddress

    from mgmt.db.models.catalog import NetworkOffering
    from mgmt.db.models.compute import Router
    from mgmt.db.models.networks import Network
    from mgmt.orchestration.allocator import lock_host
    from mgmt.orchestration.placement import free_control_ip

    host_id = world.host_ids["h1"]
    control = ipaddress.IPv4Network("169.254.0.0/24")
    routers: list[int] = []
    vm_ids = [await world.hold("h1", memory=256) for _ in range(6)]
    async with world.live.db.sessions() as session:
        offering = await session.scalar(select(NetworkOffering.id).limit(1))
        network = Network(name="ctl", display_text="ctl", zone_id=world.zone_id,
                          network_offering_id=offering, account_id=world.account_id,
                          domain_id=world.domain_id, cidr="10.9.0.0/24", gateway="10.9.0.1",
                          netmask="255.255.255.0")
        session.add(network)
        await session.flush()
        for vm_id in vm_ids:
            router = Router(vm_id=vm_id, network_id=network.id)
            session.add(router)
            await session.flush()
            routers.append(router.id)
        await session.commit()
    other_server = await open_database(world.live.db_url, migrate=False)

    async def choose(db: Database, router_id: int) -> None:
        async with db.sessions() as session:
            await lock_host(session, host_id)
            address = await free_control_ip(session, host_id, control)
            for _ in range(5):  # let the other choices run between the read and the write
                await asyncio.sleep(0)
            (await session.get_one(Router, router_id)).control_ip = address
            await session.commit()

    try:
        await asyncio.gather(*(choose(world.live.db if i % 2 else other_server, router_id)
                               for i, router_id in enumerate(routers)))
    finally:
        await other_server.close()
    async with world.live.db.sessions() as session:
        chosen_ips = (await session.scalars(select(Router.control_ip).where(
            Router.id.in_(routers)))).all()
    assert len(set(chosen_ips)) == 6, chosen_ips
