"""A zone with one pod, one Netns cluster and three hosts, made over the API; the hosts'
capacity is then set in the database (4 cores x 2000 MHz, 8 GiB each) so that the
figures are the same on every machine. Instances are rows inserted directly."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select, update

from mgmt.db.models import Account, Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import Host

GIB = 1024**3
CORES, MHZ, MEMORY = 4, 2000, 8 * GIB
_names = itertools.count(1)


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def api_error(coro) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await coro
    return err.value.error


@dataclass
class World:
    live: object
    cs: CloudStack
    zone: dict
    pod: dict
    cluster: dict
    hosts: dict[str, dict]  # name -> the API's host
    zone_id: int  # internal ids
    host_ids: dict[str, int]
    account_id: int
    domain_id: int

    async def hold(self, host: str | None, cpu_number=1, cpu_speed=1000, memory=512,
                   state="Running") -> int:
        """An instance row on ``host`` (a name, or None: not placed); its id."""
        async with self.live.db.sessions() as session:
            vm = VmInstance(name=f"i-2-{next(_names)}-VM", state=state,
                            account_id=self.account_id, domain_id=self.domain_id,
                            zone_id=self.zone_id,
                            host_id=self.host_ids[host] if host else None,
                            cpu_number=cpu_number, cpu_speed=cpu_speed, memory=memory)
            session.add(vm)
            await session.commit()
            return vm.id

    async def track(self, short: str, host: dict) -> None:
        """Know the API's ``host`` by ``short`` in hold() and set_host()."""
        async with self.live.db.sessions() as session:
            self.host_ids[short] = await session.scalar(
                select(Host.id).where(Host.uuid == host["id"]))

    async def set_host(self, name: str, **columns) -> None:
        async with self.live.db.sessions() as session:
            await session.execute(
                update(Host).where(Host.id == self.host_ids[name]).values(**columns))
            await session.commit()

    async def configure(self, name: str, value: str) -> None:
        await call(self.cs, "updateConfiguration", name=name, value=value,
                   zoneid=self.zone["id"])


async def add_host(cs, zone, pod, cluster, name: str) -> dict:
    return (await call(cs, "addHost", zoneid=zone["id"], podid=pod["id"],
                       clusterid=cluster["id"], url=f"netns://{name}",
                       hypervisor="Netns"))["host"][0]


@pytest.fixture
async def world(live) -> World:
    cs = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                    poll_interval=0.05, fetch_result=True)
    zone = (await call(cs, "createZone", name="z1", networktype="Advanced",
                       allocationstate="Enabled"))["zone"]
    pod = (await call(cs, "createPod", zoneid=zone["id"], name="p1", gateway="10.1.0.1",
                      netmask="255.255.255.0"))["pod"]
    cluster = (await call(cs, "addCluster", zoneid=zone["id"], podid=pod["id"],
                          clustername="c1", clustertype="CloudManaged",
                          hypervisor="Netns"))["cluster"][0]
    hosts = {}
    for name in ("caph1", "caph2", "caph3"):
        hosts[name.removeprefix("cap")] = await add_host(cs, zone, pod, cluster, name)
    async with live.db.sessions() as session:
        host_ids = {
            short: await session.scalar(select(Host.id).where(Host.uuid == h["id"]))
            for short, h in hosts.items()
        }
        await session.execute(
            update(Host).where(Host.id.in_(host_ids.values()))
            .values(cpu_number=CORES, cpu_speed=MHZ, memory_total=MEMORY))
        await session.commit()
        zone_id = await session.scalar(select(Zone.id).where(Zone.uuid == zone["id"]))
        admin = await session.scalar(select(Account).where(Account.name == "admin"))
    return World(live, cs, zone, pod, cluster, hosts, zone_id, host_ids, admin.id,
                 admin.domain_id)
