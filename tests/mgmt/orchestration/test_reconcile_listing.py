"""The reconcile loop asks each host which appliances it runs: a router its host does
not list misses the check without a look at its agent (which would wait out the
status timeout); a host whose listing fails or is empty decides nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mgmt.db.bootstrap import bootstrap
from mgmt.db.models import Account, Zone
from mgmt.db.models.catalog import NetworkOffering
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import Cluster, Host, Pod
from mgmt.db.models.networks import Network
from mgmt.orchestration import health, reconcile
from mgmt.orchestration.hosts.driver import HostHealth
from mgmt.orchestration.orchestrator import Orchestrator


class ListingHost:
    """A healthy host driver that lists (``listing`` None: the listing fails)."""

    def __init__(self, listing: set[str] | None):
        self.listing = listing

    async def health(self) -> HostHealth:
        return HostHealth(True)

    async def running(self) -> set[str]:
        if self.listing is None:
            raise OSError("host unreachable")
        return set(self.listing)


@pytest.fixture
async def two_on_a_host(db, tmp_path):
    await bootstrap(db, tmp_path)
    async with db.sessions() as session:
        account = await session.scalar(select(Account.id).limit(1))
        offering = await session.scalar(select(NetworkOffering.id).limit(1))
        zone = Zone(name="z")
        session.add(zone)
        await session.flush()
        pod = Pod(name="p", zone_id=zone.id, gateway="172.31.0.1", netmask="255.255.255.0")
        session.add(pod)
        await session.flush()
        cluster = Cluster(name="c", zone_id=zone.id, pod_id=pod.id, hypervisor="Netns")
        session.add(cluster)
        await session.flush()
        host = Host(
            name="h",
            zone_id=zone.id,
            pod_id=pod.id,
            cluster_id=cluster.id,
            url="netns://h",
            hypervisor="Netns",
            ip_address="127.0.0.1",
        )
        session.add(host)
        await session.flush()
        ids = []
        for k in range(2):
            net = Network(
                name=f"n{k}",
                display_text="n",
                zone_id=zone.id,
                network_offering_id=offering,
                account_id=account,
                domain_id=1,
                cidr="10.1.1.0/24",
                gateway="10.1.1.1",
                netmask="255.255.255.0",
            )
            vm = VmInstance(
                name=f"r-{k}-VM",
                type="DomainRouter",
                state="Running",
                account_id=account,
                domain_id=1,
                zone_id=zone.id,
                host_id=host.id,
            )
            session.add_all([net, vm])
            await session.flush()
            router = Router(vm_id=vm.id, network_id=net.id)
            session.add(router)
            await session.flush()
            ids.append(router.id)
        await session.commit()
        host_id = host.id
    orch = Orchestrator(db, tmp_path, "test-server")
    yield orch, host_id, ids


def _answering(monkeypatch, looked: list[int]):
    """Every agent that is asked answers, converged; the ids asked are recorded."""

    async def look(orch, router_id):
        looked.append(router_id)
        return health.Status(True, generation=0, document_hash=None, converged=True)

    monkeypatch.setattr(reconcile.health, "look", look)


async def test_a_router_its_host_does_not_list_misses_without_a_look(two_on_a_host, monkeypatch):
    orch, host_id, ids = two_on_a_host
    orch._drivers[host_id] = ListingHost({"r-0-VM", "i-2-3-VM"})  # r-1-VM is gone
    looked: list[int] = []
    _answering(monkeypatch, looked)
    loop = reconcile.Reconciler(orch)
    await loop.pass_once()
    assert looked == [ids[0]] and loop.failures == {ids[1]: 1}


@pytest.mark.parametrize("listing", [None, set()], ids=["listing fails", "empty listing"])
async def test_a_host_that_cannot_list_decides_nothing(two_on_a_host, monkeypatch, listing):
    orch, host_id, ids = two_on_a_host
    orch._drivers[host_id] = ListingHost(listing)
    looked: list[int] = []
    _answering(monkeypatch, looked)
    loop = reconcile.Reconciler(orch)
    await loop.pass_once()
    assert sorted(looked) == ids and loop.failures == {}
