"""Tenancy across every declared command: another account's object looks missing.

For each command, each uuid parameter that names an account-owned kind of
object (Param.resource) is called with an object that belongs to someone else
and with an id that does not exist. Both answers must be the same: same
errorcode, same text but for the id. Callers: a user of another account, and a
domain admin of a sibling domain. New commands are covered as soon as their
parameters say which resource they name (kinds without a factory here fail the
test, so they cannot slip through).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select

import mgmt.commands  # noqa: F401
from mgmt.api.registry import REGISTRY
from mgmt.db import jobs as job_table
from mgmt.db.models import Account, User, Zone
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import (
    CustomerGateway,
    FirewallRule,
    LbPolicy,
    RemoteAccessVpn,
    VpnConnection,
    VpnGateway,
    VpnUser,
)

#: Kinds that are not owned by an account (visible by design, or root-only).
UNOWNED = {"zone", "pod", "cluster", "host", "physicalnetwork", "vlan", "ostype",
           "serviceoffering", "diskoffering", "networkoffering", "vpcoffering", "hypervisor"}


@pytest.fixture
async def world(live):
    server, url = live, live.url
    admin = CloudStack(url, key=server.admin.apikey, secret=server.admin.secretkey,
                       fetch_result=True, poll_interval=0.1)

    async def call(client, command_name, /, **params):
        return await asyncio.to_thread(getattr(client, command_name), **params)

    async def account(name, domainid=None, accounttype=0):
        extra = {"domainid": domainid} if domainid else {}
        acct = (await call(admin, "createAccount", username=name, password="pw",
                           email=f"{name}@x.test", firstname=name, lastname="T",
                           accounttype=accounttype, **extra))["account"]
        keys = (await call(admin, "registerUserKeys", id=acct["user"][0]["id"]))["userkeys"]
        # fetch_result: an async command's refusal arrives in its job's result.
        client = CloudStack(url, key=keys["apikey"], secret=keys["secretkey"],
                            fetch_result=True, poll_interval=0.05)
        return acct, client

    d1 = (await call(admin, "createDomain", name="d1"))["domain"]
    d2 = (await call(admin, "createDomain", name="d2"))["domain"]
    alice, alice_client = await account("alice", d1["id"])  # the owner of the objects
    _, bob = await account("bob")  # a user of another account (in ROOT)
    _, d2admin = await account("d2admin", d2["id"], accounttype=2)  # outside d1

    async with server.db.sessions() as session:
        user_id = await session.scalar(
            select(User.id).where(User.uuid == alice["user"][0]["id"]))
        job = await job_table.create_job(session, cmd="deleteDomain", kind="deletedomain",
                                         params={}, user_id=user_id, account_id=None)
        await session.commit()
        job_uuid = job.uuid
    zone = (await call(admin, "createZone", name="zm", networktype="Advanced",
                       allocationstate="Enabled"))["zone"]
    ostype = (await call(admin, "listOsTypes"))["ostype"][0]["id"]
    template = (await call(alice_client, "registerTemplate", name="alice-tpl",
                           displaytext="private", url="http://203.0.113.5/t.qcow2",
                           format="QCOW2", hypervisor="KVM", ostypeid=ostype,
                           zoneid="-1"))["template"][0]
    [offering] = (await call(alice_client, "listNetworkOfferings",
                             name="DefaultIsolatedNetworkOfferingWithSourceNatService"))[
        "networkoffering"]
    network = (await call(alice_client, "createNetwork", name="alice-net", zoneid=zone["id"],
                          networkofferingid=offering["id"]))["network"]
    project = (await call(alice_client, "createProject", name="alice-prj",
                          displaytext="alice's project"))["project"]
    owned = await _owned_rows(server, alice["id"], network["id"], zone["id"])
    objects = {
        **owned,
        "template": template["id"],
        "project": project["id"],
        "network": network["id"],
        "user": alice["user"][0]["id"],
        "account": alice["id"],
        "domain": d1["id"],
        "job": job_uuid,
    }
    return call, {"bob": bob, "d2admin": d2admin}, objects


async def _owned_rows(server, account_uuid: str, network_uuid: str, zone_uuid: str) -> dict:
    """Rows alice owns that only orchestration makes (inserted directly: no hosts here)."""
    async with server.db.sessions() as session:
        account = await session.scalar(select(Account).where(Account.uuid == account_uuid))
        network = await session.scalar(select(Network).where(Network.uuid == network_uuid))
        zone = await session.scalar(select(Zone).where(Zone.uuid == zone_uuid))
        owner = {"account_id": account.id, "domain_id": account.domain_id}
        rng = VlanIpRange(zone_id=zone.id, gateway="203.0.113.1", netmask="255.255.255.0",
                          start_ip="203.0.113.10", end_ip="203.0.113.10")
        session.add(rng)
        await session.flush()
        ip = PublicIp(address="203.0.113.10", zone_id=zone.id, vlan_range_id=rng.id,
                      state="Allocated", account_id=account.id, network_id=network.id)
        vm = VmInstance(name="i-x-1-VM", host_name="vm1", type="User", state="Stopped",
                        zone_id=zone.id, **owner)
        rvm = VmInstance(name="r-x-2-VM", type="DomainRouter", state="Stopped",
                         zone_id=zone.id, **owner)
        session.add_all([ip, vm, rvm])
        await session.flush()
        router = Router(vm_id=rvm.id, network_id=network.id)
        rules = {kind: FirewallRule(purpose=kind, network_id=network.id, ip_address_id=ip.id,
                                    protocol="tcp", start_port=22, state="Active", **owner)
                 for kind in ("Firewall", "PortForwarding")}
        rules["LoadBalancing"] = FirewallRule(
            purpose="LoadBalancing", network_id=network.id, ip_address_id=ip.id,
            protocol="tcp", start_port=80, dest_start=80, name="lb", algorithm="source",
            state="Active", **owner)
        session.add_all([router, *rules.values()])
        await session.flush()
        policies = {kind: LbPolicy(rule_id=rules["LoadBalancing"].id, kind=kind,
                                   method="SourceBased", state="Active")
                    for kind in ("Stickiness", "HealthCheck")}
        customer = CustomerGateway(name="cgw", gateway="198.51.100.7", cidr_list="10.9.0.0/24",
                                   ipsec_psk="psk-1234", ike_policy="aes128-sha1;modp1536",
                                   esp_policy="aes128-sha1", **owner)
        gateway = VpnGateway(network_id=network.id, ip_address_id=ip.id, **owner)
        vpn = RemoteAccessVpn(network_id=network.id, ip_address_id=ip.id,
                              ip_range="10.1.2.1-10.1.2.8", preshared_key="psk-abcdef",
                              state="Running", **owner)
        user = VpnUser(username="vpnuser", password="secret-1", state="Active", **owner)
        session.add_all([*policies.values(), customer, gateway, vpn, user])
        await session.flush()
        connection = VpnConnection(vpn_gateway_id=gateway.id, customer_gateway_id=customer.id,
                                   state="Connected", **owner)
        session.add(connection)
        await session.commit()
        return {"ipaddress": ip.uuid, "virtualmachine": vm.uuid, "router": rvm.uuid,
                "firewallrule": rules["Firewall"].uuid,
                "portforwardingrule": rules["PortForwarding"].uuid,
                "loadbalancer": rules["LoadBalancing"].uuid,
                "lbstickinesspolicy": policies["Stickiness"].uuid,
                "lbhealthcheckpolicy": policies["HealthCheck"].uuid,
                "vpncustomergateway": customer.uuid, "vpngateway": gateway.uuid,
                "vpnconnection": connection.uuid, "remoteaccessvpn": vpn.uuid,
                "vpnuser": user.uuid}


def _dummy(p) -> str:
    return {"uuid": str(uuid.uuid4()), "integer": "1", "long": "1", "short": "1",
            "boolean": "false", "date": "2026-01-01"}.get(p.type, p.choices[0] if p.choices
                                                          else "x")


async def _answer(call, client, name, params):
    try:
        return ("ok", await call(client, name, **params))
    except CloudStackApiException as exc:
        return (exc.error.get("errorcode"), exc.error.get("errortext"))


async def test_other_accounts_objects_answer_like_missing_ones(world):
    call, callers, objects = world
    checked = 0
    for cmd in sorted(REGISTRY.values(), key=lambda c: c.name):
        for p in cmd.params:
            if p.type != "uuid" or p.resource is None or p.resource in UNOWNED:
                continue
            assert p.resource in objects, f"no factory for {p.resource} ({cmd.name}.{p.name})"
            base = {q.name: _dummy(q) for q in cmd.params if q.required and q.name != p.name}
            missing = str(uuid.uuid4())
            for who, client in callers.items():
                mine = {**base, p.name: objects[p.resource]}
                theirs = await _answer(call, client, cmd.name, mine)
                absent = await _answer(call, client, cmd.name, {**base, p.name: missing})
                if theirs[0] == "ok":  # a listing: it must show nothing, as for a missing id
                    assert theirs == absent, f"{who} saw {cmd.name} {p.name}={p.resource}"
                    checked += 1
                    continue
                assert theirs[0] == absent[0], (cmd.name, p.name, who, theirs, absent)
                assert (theirs[1] or "").replace(objects[p.resource], "ID") == \
                    (absent[1] or "").replace(missing, "ID"), (cmd.name, p.name, who)
                checked += 1
    assert checked >= 10
