"""A tenant's network for the rule commands' live tests (the real cs client).

No host here: the network has no router, so each job's rows settle at once (the
orchestration e2e tests carry real traffic). Public IPs, two instances and a VPN
gateway are inserted directly, as orchestration would have made them.
"""

from __future__ import annotations

import asyncio

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select

from mgmt.db.models import Account, Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import VpnGateway

DEFAULT = "DefaultIsolatedNetworkOfferingWithSourceNatService"


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def api_error(coro) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await coro
    return err.value.error


@pytest.fixture
async def world(live):
    admin = CloudStack(
        live.url,
        key=live.admin.apikey,
        secret=live.admin.secretkey,
        poll_interval=0.05,
        fetch_result=True,
    )
    zone = (
        await call(
            admin,
            "createZone",
            name="z1",
            networktype="Advanced",
            allocationstate="Enabled",
            guestcidraddress="10.20.0.0/16",
        )
    )["zone"]
    [offering] = (await call(admin, "listNetworkOfferings", name=DEFAULT))["networkoffering"]
    account = (
        await call(
            admin,
            "createAccount",
            username="alice",
            password="pw",
            email="a@x.test",
            firstname="A",
            lastname="T",
        )
    )["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    alice = CloudStack(
        live.url,
        key=keys["apikey"],
        secret=keys["secretkey"],
        poll_interval=0.05,
        fetch_result=True,
    )
    net = (
        await call(
            alice, "createNetwork", name="web", zoneid=zone["id"], networkofferingid=offering["id"]
        )
    )["network"]
    ids = await _rows(live, account["id"], net["id"], zone["id"])
    return {"admin": admin, "alice": alice, "net": net, "server": live, **ids}


async def _rows(server, account_uuid: str, network_uuid: str, zone_uuid: str) -> dict:
    async with server.db.sessions() as session:
        account = await session.scalar(select(Account).where(Account.uuid == account_uuid))
        network = await session.scalar(select(Network).where(Network.uuid == network_uuid))
        zone = await session.scalar(select(Zone).where(Zone.uuid == zone_uuid))
        owner = {"account_id": account.id, "domain_id": account.domain_id}
        rng = VlanIpRange(
            zone_id=zone.id,
            gateway="203.0.113.1",
            netmask="255.255.255.0",
            start_ip="203.0.113.10",
            end_ip="203.0.113.12",
        )
        session.add(rng)
        await session.flush()
        ips = [
            PublicIp(
                address=f"203.0.113.{10 + k}",
                zone_id=zone.id,
                vlan_range_id=rng.id,
                state="Allocated",
                account_id=account.id,
                network_id=network.id,
                source_nat=k == 0,
            )
            for k in range(3)
        ]
        vms = [
            VmInstance(
                name=f"i-{account.id}-{k}-VM",
                host_name=f"web{k}",
                type="User",
                state="Running",
                zone_id=zone.id,
                **owner,
            )
            for k in (1, 2)
        ]
        session.add_all([*ips, *vms])
        await session.flush()
        session.add_all(
            [
                Nic(
                    vm_id=vm.id,
                    network_id=network.id,
                    ip_address=f"10.20.0.{10 + k}",
                    netmask="255.255.0.0",
                    mac=f"02:00:00:00:00:{10 + k:02x}",
                    is_default=True,
                )
                for k, vm in enumerate(vms)
            ]
        )
        gateway = VpnGateway(network_id=network.id, ip_address_id=ips[0].id, **owner)
        session.add(gateway)
        await session.commit()
        return {
            "ips": [ip.uuid for ip in ips],
            "vms": [vm.uuid for vm in vms],
            "vpngateway": gateway.uuid,
        }
