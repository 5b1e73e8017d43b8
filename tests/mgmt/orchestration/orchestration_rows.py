"""Database rows the orchestration tests start from: a bootstrapped database with a
zone and routers (one network each), optionally on a host. No namespaces."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from mgmt.db.bootstrap import bootstrap
from mgmt.db.models import Account, Zone
from mgmt.db.models.catalog import NetworkOffering
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import Cluster, Host, Pod
from mgmt.db.models.networks import Network


@dataclass
class Rows:
    zone_id: int
    account_id: int
    router_ids: list[int]
    network_ids: list[int]
    host_id: int | None = None


async def routers_in_a_zone(db, home, count: int, *, on_a_host: bool = False) -> Rows:
    await bootstrap(db, home)
    async with db.sessions() as session:
        account = await session.scalar(select(Account.id).limit(1))
        offering = await session.scalar(select(NetworkOffering.id).limit(1))
        zone = Zone(name="z")
        session.add(zone)
        await session.flush()
        host_id = None
        if on_a_host:
            pod = Pod(name="p", zone_id=zone.id, gateway="172.31.0.1", netmask="255.255.255.0")
            session.add(pod)
            await session.flush()
            cluster = Cluster(name="c", zone_id=zone.id, pod_id=pod.id, hypervisor="Netns")
            session.add(cluster)
            await session.flush()
            host = Host(name="h", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                        url="netns://h", hypervisor="Netns", ip_address="127.0.0.1")
            session.add(host)
            await session.flush()
            host_id = host.id
        rows = Rows(zone.id, account, [], [], host_id)
        for k in range(count):
            net = Network(name=f"n{k}", display_text="n", zone_id=zone.id,
                          network_offering_id=offering, account_id=account, domain_id=1,
                          cidr="10.1.1.0/24", gateway="10.1.1.1", netmask="255.255.255.0")
            vm = VmInstance(name=f"r-{k}-VM", type="DomainRouter", state="Running",
                            account_id=account, domain_id=1, zone_id=zone.id, host_id=host_id)
            session.add_all([net, vm])
            await session.flush()
            router = Router(vm_id=vm.id, network_id=net.id)
            session.add(router)
            await session.flush()
            rows.router_ids.append(router.id)
            rows.network_ids.append(net.id)
        await session.commit()
    return rows
