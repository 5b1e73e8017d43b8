"""The system VMs' reconcile pass without namespaces: which zones are ready for system
VMs, a silent one recreated after the threshold (at once when its host does not list
it), the breaker when several go silent together, a failed start retried, an
admin-stopped one left alone; and the documents the two roles get."""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import select, update

from appliances.console.document import ConsoleDocument
from appliances.storage.document import StorageDocument
from mgmt.db.bootstrap import bootstrap
from mgmt.db.models import Account, Event, Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import Host, PhysicalNetwork, TrafficType
from mgmt.db.models.systemvms import SystemVm
from mgmt.orchestration import health, systemvm_keys, systemvms
from mgmt.orchestration.hosts.driver import HostHealth
from mgmt.orchestration.orchestrator import Orchestrator
from mgmt.orchestration.systemvm_documents import DOCUMENTS, DocumentInputs
from tests.mgmt.zonerows import zone_rows


class FakeHost:
    """A healthy host that lists ``listing`` and keeps image stores under /srv."""

    control_network = ipaddress.IPv4Network("169.254.9.0/24")

    def __init__(self, listing: set[str]):
        self.listing = listing

    async def health(self) -> HostHealth:
        return HostHealth(True)

    async def running(self) -> set[str]:
        return set(self.listing)

    def image_store(self, zone: str) -> str:
        return f"/srv/images/{zone}"


async def _world(db, home, *, ready: bool = False):
    await bootstrap(db, home)
    async with db.sessions() as session:
        admin = await session.scalar(select(Account).where(Account.name == "admin"))
        rows = await zone_rows(session, zone=Zone(name="z", allocation_state="Enabled"),
                               host_name="h", host_url="netns://h", first_ip="203.0.113.10")
        zone, host, ips = rows.zone, rows.host, rows.ips
        phys = PhysicalNetwork(name="pn", zone_id=zone.id, state="Enabled" if ready else "Disabled")
        session.add(phys)
        await session.flush()
        session.add(TrafficType(physical_network_id=phys.id, traffic_type="Public"))
        ids = {}
        for k, (role, kind) in enumerate(
            (("storage", "SecondaryStorageVm"), ("console", "ConsoleProxy"))
        ):
            vm = VmInstance(
                name=f"{role[0] if role == 'storage' else 'v'}-{k + 1}-VM",
                type=kind,
                state="Running",
                account_id=admin.id,
                domain_id=admin.domain_id,
                zone_id=zone.id,
                host_id=host.id,
            )
            session.add(vm)
            await session.flush()
            svm = SystemVm(
                vm_id=vm.id,
                zone_id=zone.id,
                role=role,
                control_ip=f"169.254.9.{k + 2}",
                public_ip_id=ips[k].id,
            )
            session.add(svm)
            await session.flush()
            ids[role] = svm.id
        await session.commit()
    orch = Orchestrator(db, home, "test-server")
    orch._drivers[host.id] = FakeHost({"s-1-VM", "v-2-VM"})
    return orch, zone.id, host.id, ids


@pytest.fixture
async def world(db, tmp_path, monkeypatch):
    orch, zone_id, host_id, ids = await _world(db, tmp_path)
    calls: dict[str, list] = {"look": [], "push": [], "recreate": []}
    answering = {ids["storage"]: True, ids["console"]: True}

    async def look(orch, svm_id):
        calls["look"].append(svm_id)
        return health.Status(answering[svm_id], generation=1, document_hash="h", converged=True)

    async def push(orch, svm_id, *, force=False):
        calls["push"].append((svm_id, force))
        return 1

    async def recreate(orch, svm_id, reason):
        calls["recreate"].append((svm_id, reason))
        async with orch.db.sessions() as session:
            svm = await session.get_one(SystemVm, svm_id)
            svm.remove()
            await session.commit()
        return svm_id + 100

    monkeypatch.setattr(systemvms, "look", look)
    monkeypatch.setattr(systemvms, "push", push)
    monkeypatch.setattr(systemvms, "recreate", recreate)
    return orch, zone_id, host_id, ids, calls, answering


async def test_only_a_zone_with_its_public_network_is_ready(db, tmp_path):
    orch, zone_id, _, _ = await _world(db, tmp_path)
    async with db.sessions() as session:
        assert await systemvms.ready_zones(session) == []
        await session.execute(update(PhysicalNetwork).values(state="Enabled"))
        await session.commit()
        assert await systemvms.ready_zones(session) == [zone_id]
        await session.execute(update(Host).values(state="Alert"))
        await session.commit()
        assert await systemvms.ready_zones(session) == []


async def test_a_silent_system_vm_is_recreated_after_the_threshold(world):
    orch, _, _, ids, calls, answering = world
    answering[ids["console"]] = False
    first = await systemvms.pass_once(orch)
    assert first.checked == 2 and first.recreated == [] and first.silent == []
    assert calls["push"] == [(ids["storage"], False)]  # the answering one: unchanged
    second = await systemvms.pass_once(orch)  # router.check.failures: 2
    assert second.silent == [ids["console"]] and second.recreated == [ids["console"]]
    assert calls["recreate"] == [(ids["console"], "it stopped answering")]


async def test_one_its_host_does_not_list_misses_without_a_look(world):
    orch, _, host_id, ids, calls, _ = world
    orch._drivers[host_id].listing = {"s-1-VM"}
    await systemvms.pass_once(orch)
    assert calls["look"] == [ids["storage"]]
    assert systemvms.watch_of(orch).failures == {ids["console"]: 1}


async def test_the_breaker_stops_recreating_when_all_go_silent(world, db):
    orch, _, _, ids, calls, answering = world
    answering.update({k: False for k in answering})
    await systemvms.pass_once(orch)
    report = await systemvms.pass_once(orch)
    assert report.breaker_open and calls["recreate"] == []
    await systemvms.pass_once(orch)  # still open: one alert, not one per pass
    async with db.sessions() as session:
        alerts = (
            await session.scalars(select(Event).where(Event.type == "SYSTEMVM.RECREATE.HALTED"))
        ).all()
    assert len(alerts) == 1 and alerts[0].level == "ERROR"
    answering[ids["storage"]] = True  # one comes back: the other one alone is repaired
    report = await systemvms.pass_once(orch)
    assert not report.breaker_open and report.recreated == [ids["console"]]


async def test_the_routers_breaker_holds_system_vms_too(world):
    orch, _, _, ids, calls, answering = world
    answering[ids["console"]] = False

    class Reconciler:
        breaker_open = True

    orch.reconciler = Reconciler()
    await systemvms.pass_once(orch)
    report = await systemvms.pass_once(orch)
    assert report.breaker_open and calls["recreate"] == []


async def test_a_failed_start_is_retried_and_a_stopped_one_left_alone(world, db):
    orch, _, _, ids, calls, _ = world
    async with db.sessions() as session:
        for role, state in (("storage", "Error"), ("console", "Stopped")):
            svm = await session.get_one(SystemVm, ids[role])
            vm = await session.get_one(VmInstance, svm.vm_id)
            vm.state = state
        await session.commit()
    report = await systemvms.pass_once(orch)
    assert report.checked == 0
    assert calls["recreate"] == [(ids["storage"], "it was left Error")]


async def test_drift_forces_a_push(world, monkeypatch):
    orch, _, _, ids, calls, _ = world
    async with orch.db.sessions() as session:
        svm = await session.get_one(SystemVm, ids["console"])
        svm.applied_generation, svm.applied_hash = 1, "other"
        await session.commit()
    await systemvms.pass_once(orch)
    assert (ids["console"], True) in calls["push"] and (ids["storage"], False) in calls["push"]


async def test_the_documents_of_both_roles(world, db):
    orch, zone_id, host_id, ids, _, _ = world
    async with db.sessions() as session:
        zone = await session.get_one(Zone, zone_id)
        docs = {}
        for role in ("console", "storage"):
            svm = await session.get_one(SystemVm, ids[role])
            vm = await session.get_one(VmInstance, svm.vm_id)
            docs[role] = await DOCUMENTS[role](
                DocumentInputs(orch, session, zone, vm, svm, "203.0.113.10", orch._drivers[host_id])
            )
    console = ConsoleDocument.model_validate(docs["console"])
    assert console.proxy_id == "v-2-VM" and console.listen.address == "203.0.113.10"
    assert console.listen.port == 8080 and console.idle_timeout_s == 300
    assert console.token_keys == await systemvm_keys.console_keys(db, zone.uuid)
    storage = StorageDocument.model_validate(docs["storage"])
    assert storage.appliance_id == "s-1-VM"
    assert storage.store.path == f"/srv/images/{zone.uuid}"
    assert storage.transfer is not None and storage.transfer.address == "203.0.113.10"
    assert storage.transfer.public_url == "http://203.0.113.10"
    assert storage.transfer.key == await systemvm_keys.storage_key(db, zone.uuid)
    assert storage.images == []  # storage_images fills it (templates)


async def test_keys_are_made_once_and_shared(db, tmp_path):
    await bootstrap(db, tmp_path)
    keys = [await systemvm_keys.storage_key(db, "zone-a") for _ in range(3)]
    assert len(set(keys)) == 1 and len(keys[0]) >= 32
    assert await systemvm_keys.storage_key(db, "zone-b") != keys[0]
    console = await systemvm_keys.console_keys(db, "zone-a")
    assert len(console) == 1 and await systemvm_keys.console_keys(db, "zone-a") == console
