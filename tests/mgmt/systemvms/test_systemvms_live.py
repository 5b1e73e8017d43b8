"""listSystemVms and createConsoleEndpoint on a live server with the cs client: the
fields, who may call them, and what is refused. The system VM and instance rows are
written directly (no namespaces: the lab e2e test, tests/e2e/test_systemvms_e2e.py,
runs the real ones)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select

from appliances.common import console_token
from mgmt.db.models import Account, Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host, PublicIp
from mgmt.db.models.systemvms import SystemVm, VmConsole
from mgmt.db.sealing import VNC_PASSWORD as VNC_SEAL
from mgmt.db.sealing import is_sealed
from mgmt.orchestration import systemvm_keys, systemvms
from tests.mgmt.zonerows import zone_rows

VNC_PORT, VNC_PASSWORD = 5907, "pw-12345"


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def fails(client, command_name, /, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await call(client, command_name, **params)
    return err.value.error


@dataclass
class World:
    live: object
    admin: CloudStack
    alice: CloudStack
    bob: CloudStack
    zone: Zone
    host: Host
    proxy_uuid: str
    ssvm_uuid: str
    vm_uuid: str  # alice's, Running, with a VNC display


async def client_of(live, admin, name: str, accounttype: int = 0) -> CloudStack:
    account = (
        await call(
            admin,
            "createAccount",
            username=name,
            password=f"pw-{name}",
            email=f"{name}@x.test",
            firstname=name,
            lastname="T",
            accounttype=accounttype,
        )
    )["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return CloudStack(
        live.url,
        key=keys["apikey"],
        secret=keys["secretkey"],
        fetch_result=True,
        poll_interval=0.05,
    )


async def _system_vm(session, zone, host, account, role: str, n: int, ip: PublicIp, **svm) -> str:
    prefix = {"console": ("v", "ConsoleProxy"), "storage": ("s", "SecondaryStorageVm")}[role]
    vm = VmInstance(
        name=f"{prefix[0]}-{n}-VM",
        type=prefix[1],
        state="Running",
        account_id=account.id,
        domain_id=account.domain_id,
        zone_id=zone.id,
        host_id=host.id,
    )
    session.add(vm)
    await session.flush()
    session.add_all(
        [
            Nic(
                vm_id=vm.id,
                traffic_type="Control",
                ip_address=f"169.254.0.{n + 10}",
                netmask="255.255.255.0",
                mac=f"0e:00:00:00:00:{n:02x}",
                device_id=0,
            ),
            Nic(
                vm_id=vm.id,
                traffic_type="Public",
                ip_address=ip.address,
                netmask="255.255.255.0",
                gateway="203.0.113.1",
                mac=f"06:00:00:00:00:{n:02x}",
                device_id=1,
                is_default=True,
            ),
            SystemVm(
                vm_id=vm.id,
                zone_id=zone.id,
                role=role,
                control_ip=f"169.254.0.{n + 10}",
                public_ip_id=ip.id,
                **svm,
            ),
        ]
    )
    return vm.uuid


@pytest.fixture
async def world(live, monkeypatch) -> World:
    # These rows stand for system VMs that do not run: the server must not look at them
    # (their control addresses could be another lab's on this machine).
    monkeypatch.setattr(systemvms, "kick", lambda orch: None)
    admin = CloudStack(
        live.url,
        key=live.admin.apikey,
        secret=live.admin.secretkey,
        fetch_result=True,
        poll_interval=0.05,
    )
    alice = await client_of(live, admin, "alice")
    bob = await client_of(live, admin, "bob")
    async with live.db.sessions() as session:
        root = await session.scalar(select(Account).where(Account.name == "admin"))
        owner = await session.scalar(select(Account).where(Account.name == "alice"))
        # Enabled, with a host and a public range, but no physical network carrying
        # Public traffic: the server starts no system VMs of its own here.
        rows = await zone_rows(
            session, zone=Zone(name="zc", allocation_state="Enabled", dns1="203.0.113.1"),
            host_name="consolehost", host_url="netns://svmt", first_ip="203.0.113.40")
        zone, host, ips = rows.zone, rows.host, rows.ips
        proxy = await _system_vm(
            session, zone, host, root, "console", 1, ips[0], active_sessions=3, version="9.9"
        )
        ssvm = await _system_vm(session, zone, host, root, "storage", 2, ips[1])
        vm = VmInstance(
            name=f"i-{owner.id}-99-VM",
            host_name="desk",
            type="User",
            state="Running",
            account_id=owner.id,
            domain_id=owner.domain_id,
            zone_id=zone.id,
            host_id=host.id,
        )
        session.add(vm)
        await session.flush()
        sealed = live.orchestrator.sealer.seal(VNC_PASSWORD, VNC_SEAL)
        session.add(VmConsole(vm_id=vm.id, host_id=host.id, port=VNC_PORT, password=sealed))
        await session.commit()
        return World(live, admin, alice, bob, zone, host, proxy, ssvm, vm.uuid)


async def test_list_system_vms_fields_and_filters(world: World):
    listed = (await call(world.admin, "listSystemVms"))["systemvm"]
    by_type = {s["systemvmtype"]: s for s in listed}
    assert set(by_type) == {"consoleproxy", "secondarystoragevm"}
    proxy, ssvm = by_type["consoleproxy"], by_type["secondarystoragevm"]
    assert proxy["id"] == world.proxy_uuid and proxy["name"] == "v-1-VM"
    for field in (
        "id",
        "name",
        "systemvmtype",
        "state",
        "zoneid",
        "zonename",
        "hostid",
        "hostname",
        "publicip",
        "linklocalip",
        "privateip",
        "created",
        "version",
    ):
        assert field in proxy and field in ssvm, field
    assert (proxy["state"], proxy["zonename"], proxy["hostname"]) == (
        "Running",
        "zc",
        "consolehost",
    )
    assert (proxy["publicip"], proxy["linklocalip"]) == ("203.0.113.40", "169.254.0.11")
    assert proxy["activeviewersessions"] == 3 and "activeviewersessions" not in ssvm
    assert proxy["version"] == "9.9"
    # Never looked at by this server: its agent counts as disconnected, not up.
    assert proxy["agentstate"] == "Disconnected"
    only = await call(world.admin, "listSystemVms", systemvmtype="secondarystoragevm")
    assert [s["id"] for s in only["systemvm"]] == [world.ssvm_uuid]
    assert (await call(world.admin, "listSystemVms", id=world.proxy_uuid))["count"] == 1
    assert (await call(world.admin, "listSystemVms", state="Stopped")) == {}


async def test_system_vm_commands_are_for_the_root_admin(world: World):
    domain_admin = await client_of(world.live, world.admin, "dadmin", accounttype=2)
    for client in (world.alice, domain_admin):
        err = await fails(client, "listSystemVms")
        assert err["errorcode"] == 432, err
        err = await fails(client, "stopSystemVm", id=world.proxy_uuid)
        assert err["errorcode"] == 432, err
    err = await fails(world.admin, "startSystemVm", id=world.proxy_uuid)
    assert err["errorcode"] == 431 and "Running" in err["errortext"]


async def test_a_console_endpoint_for_ones_own_running_instance(world: World):
    before = time.time()
    answer = (
        await call(
            world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid, token="extra-1"
        )
    )["consoleendpoint"]
    assert answer["success"] is True
    ws = answer["websocket"]
    assert (ws["host"], ws["port"], ws["path"], ws["extra"]) == (
        "203.0.113.40",
        "8080",
        "/websockify",
        "extra-1",
    )
    assert answer["url"] == f"http://203.0.113.40:8080/?token={ws['token']}"
    keys = await systemvm_keys.console_keys(world.live.db, world.zone.uuid)
    grant = console_token.open_token(ws["token"], [console_token.decode_key(k) for k in keys])
    # The VNC server on the instance's host: the host's control address (the netns host
    # has 169.254.0.1 until its fabric picks its own subnet), its port and password.
    assert (grant.instance_id, grant.host, grant.port, grant.password) == (
        world.vm_uuid,
        "169.254.0.1",
        VNC_PORT,
        VNC_PASSWORD,
    )
    assert before + 110 <= grant.expires <= time.time() + 130  # consoleproxy.token.ttl
    # Each call is a new session with a new one-time nonce.
    again = (await call(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid))[
        "consoleendpoint"
    ]
    other = console_token.open_token(
        again["websocket"]["token"], [console_token.decode_key(k) for k in keys]
    )
    assert (other.nonce, other.session_id) != (grant.nonce, grant.session_id)
    assert again["websocket"]["extra"] == ""
    # The password travels only inside the sealed token, and is sealed on the row.
    assert VNC_PASSWORD not in str(answer)
    async with world.live.db.sessions() as session:
        stored = await session.scalar(
            select(VmConsole.password).where(VmConsole.port == VNC_PORT, VmConsole.live())
        )
    assert is_sealed(stored) and VNC_PASSWORD not in stored


async def test_another_accounts_instance_looks_missing(world: World):
    theirs = await fails(world.bob, "createConsoleEndpoint", virtualmachineid=world.vm_uuid)
    missing_id = "5a1b2c3d-0000-4000-8000-000000000000"
    missing = await fails(world.bob, "createConsoleEndpoint", virtualmachineid=missing_id)
    assert theirs["errorcode"] == missing["errorcode"] == 431
    assert theirs["errortext"].replace(world.vm_uuid, "ID") == missing["errortext"].replace(
        missing_id, "ID"
    )


async def _set_vm(world: World, **values) -> None:
    async with world.live.db.sessions() as session:
        vm = await session.scalar(select(VmInstance).where(VmInstance.uuid == world.vm_uuid))
        for key, value in values.items():
            setattr(vm, key, value)
        await session.commit()


async def test_refusals_stopped_instance_no_display_no_proxy(world: World):
    await _set_vm(world, state="Stopped", host_id=None)
    err = await fails(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid)
    assert err["errorcode"] == 431 and "Stopped" in err["errortext"]
    await _set_vm(world, state="Running", host_id=world.host.id)
    async with world.live.db.sessions() as session:
        display = await session.scalar(select(VmConsole).where(VmConsole.port == VNC_PORT))
        display.remove()
        await session.commit()
    err = await fails(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid)
    assert err["errorcode"] == 530 and "no console display" in err["errortext"]
    async with world.live.db.sessions() as session:
        display = await session.scalar(select(VmConsole).where(VmConsole.port == VNC_PORT))
        display.removed = None
        await session.commit()
    async with world.live.db.sessions() as session:
        proxy = await session.scalar(select(VmInstance).where(VmInstance.uuid == world.proxy_uuid))
        proxy.state = "Stopped"
        await session.commit()
    err = await fails(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid)
    assert err["errorcode"] == 530 and "console proxy of zone zc" in err["errortext"]


async def test_a_rotation_keeps_the_previous_key(world: World):
    first = (await call(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid))[
        "consoleendpoint"
    ]
    old = await systemvm_keys.console_keys(world.live.db, world.zone.uuid)
    keys = await systemvm_keys.rotate_console_keys(world.live.db, world.zone.uuid)
    assert len(keys) == 2 and keys[1] == old[0] and keys[0] != old[0]
    after = (await call(world.alice, "createConsoleEndpoint", virtualmachineid=world.vm_uuid))[
        "consoleendpoint"
    ]
    both = [console_token.decode_key(k) for k in keys]
    for answer in (first, after):  # a token from before the rotation still opens
        console_token.open_token(answer["websocket"]["token"], both)
    with pytest.raises(console_token.TokenInvalid):
        console_token.open_token(after["websocket"]["token"], [both[1]])
    third = await systemvm_keys.rotate_console_keys(world.live.db, world.zone.uuid)
    assert third[1] == keys[0] and old[0] not in third  # two keys at most
