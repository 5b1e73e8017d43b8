"""Public IP addresses of networks: associate, disassociate, list; static NAT."""

from __future__ import annotations

from sqlalchemy import select, update

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import date, of_uuid, paged, rows_by_id
from mgmt.commands.rulebase import (
    LIVE_STATES,
    conflict,
    guest_vm,
    ip_network,
    lock_public_ip,
    visible_ip,
    visible_network,
)
from mgmt.commands.scope import scoped
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule, RemoteAccessVpn
from mgmt.orchestration import addresses, networks, sync


async def ip_answers(session, ips: list[PublicIp]) -> list[dict]:
    zones = await rows_by_id(session, Zone, (i.zone_id for i in ips))
    nets = await rows_by_id(session, Network, (i.network_id for i in ips))
    accounts = await rows_by_id(session, Account, (i.account_id for i in ips))
    vms = await rows_by_id(session, VmInstance, (i.static_nat_vm_id for i in ips))
    ranges = await rows_by_id(session, VlanIpRange, (i.vlan_range_id for i in ips))
    domains = await rows_by_id(session, Domain, (a.domain_id for a in accounts.values()))
    out = []
    for ip in ips:
        account, net, vm = accounts.get(ip.account_id), nets.get(ip.network_id), \
            vms.get(ip.static_nat_vm_id)
        rng = ranges.get(ip.vlan_range_id)
        answer = {
            "id": ip.uuid,
            "ipaddress": ip.address,
            "allocated": date(ip.allocated),
            "zoneid": zones[ip.zone_id].uuid,
            "zonename": zones[ip.zone_id].name,
            "issourcenat": ip.source_nat,
            "isstaticnat": bool(ip.static_nat_vm_id),
            "issystem": ip.account_id is None,  # a system VM's (mgmt.orchestration.systemvms)
            "forvirtualnetwork": True,
            "state": ip.state,
            "account": account.name if account else None,
            "domainid": domains[account.domain_id].uuid if account else None,
            "domain": domains[account.domain_id].name if account else None,
            "associatednetworkid": net.uuid if net else None,
            "associatednetworkname": net.name if net else None,
            "networkid": net.uuid if net else None,
            "vlanid": rng.uuid if rng else None,
            "vlanname": rng.vlan if rng else None,
            "virtualmachineid": vm.uuid if vm else None,
            "virtualmachinename": vm.host_name if vm else None,
            "virtualmachinedisplayname": vm.display_name if vm else None,
            "vmipaddress": ip.static_nat_ip,
            "fordisplay": True,
            "tags": [],
        }
        out.append({k: v for k, v in answer.items() if v is not None})
    return out


async def _answer(session, ip_id: int) -> dict:
    [answer] = await ip_answers(session, [await session.get_one(PublicIp, ip_id)])
    return answer


async def _check_associate(call, args) -> dict:
    if not args["networkid"]:
        raise param_error("networkid is required (isolated networks only)")
    async with call.server.db.sessions() as session:
        await visible_network(session, call, args["networkid"])
    return {}


@command(
    "associateIpAddress",
    description="Acquires a public IP address of the zone for an isolated network (and "
    "implements the network if it is not yet)",
    params=[
        Param("networkid", "uuid", resource="network"),
        Param("zoneid", "uuid"),
        Param("ipaddress", description="a particular free address"),
        Param("account"),
        Param("domainid", "uuid", resource="domain"),
        Param("projectid", "uuid", resource="project"),
        Param("vpcid", "uuid", description="not supported yet"),
        Param("isportable", "boolean", description="accepted for compatibility"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="ipaddress",
    instance_type="IpAddress",
    prepare=_check_associate,
    since="2.0.0",
)
async def associate_ip_address(call, args) -> ObjectResult:
    if args["vpcid"]:
        raise ApiError(431, "VPCs are not supported yet (vpcid)")
    orch = call.server.orchestrator
    async with call.server.db.sessions() as session:
        network = await visible_network(session, call, args["networkid"])
    ip = await addresses.allocate(call.server.db, network.zone_id, network.account_id,
                                  network.id, address=args["ipaddress"])
    if args.get("new_id"):
        async with call.server.db.sessions() as session, session.begin():
            await session.execute(update(PublicIp).where(PublicIp.id == ip.id)
                                  .values(uuid=args["new_id"]))
    try:
        await networks.implement(orch, network.id)
        await sync.apply_network(orch, network.id)
    except (sync.RouterRefused, sync.RouterUnreachable, ApiError) as exc:
        await addresses.release(call.server.db, ip.id)
        raise exc if isinstance(exc, ApiError) else ApiError(530, str(exc)) from exc
    async with call.server.db.sessions() as session:
        row = await session.get_one(PublicIp, ip.id)
        await call.server.events.record(call, "NET.IPASSIGN", f"acquired {row.address} for "
                                        f"network {network.name}", row)
        return ObjectResult("ipaddress", await _answer(session, ip.id))


async def _check_ip_id(call, args) -> dict:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["id"])
        return {"jobinstanceid": ip.uuid}


@command(
    "disassociateIpAddress",
    description="Releases a public IP address and removes its rules",
    params=[Param("id", "uuid", required=True, resource="ipaddress")],
    is_async=True,
    instance_type="IpAddress",
    prepare=_check_ip_id,
    since="2.0.0",
)
async def disassociate_ip_address(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["id"])
        if ip.account_id is None:
            raise param_error(f"{ip.address} belongs to a system VM: it goes with it")
        if ip.source_nat:
            raise param_error(f"{ip.address} is the network's source NAT address: it goes "
                              "with the network")
        if await session.scalar(select(RemoteAccessVpn.id).where(
                RemoteAccessVpn.ip_address_id == ip.id, RemoteAccessVpn.live())):
            raise param_error(f"{ip.address} carries a remote access VPN: delete it first")
        rules = (await session.scalars(select(FirewallRule).where(
            FirewallRule.ip_address_id == ip.id, FirewallRule.live()))).all()
        for rule in rules:
            rule.state = "Revoke"
        keys = [("rule", r.id) for r in rules]
        network_id = ip.network_id
        await session.commit()
    # The address leaves the document with its rules: take it out, then apply.
    async with call.server.db.sessions() as session, session.begin():
        await session.execute(update(PublicIp).where(PublicIp.id == ip.id).values(
            state="Releasing"))
    try:
        if network_id is not None:
            await sync.apply_change(call.server.orchestrator, network_id, keys)
    except ApiError:
        async with call.server.db.sessions() as session, session.begin():
            await session.execute(update(PublicIp).where(PublicIp.id == ip.id).values(
                state="Allocated"))
        raise
    await addresses.release(call.server.db, ip.id)
    await call.server.events.record(call, "NET.IPRELEASE", f"released {ip.address}", ip)
    return PlainResult({"success": True})


@command(
    "listPublicIpAddresses",
    description="Lists public IP addresses",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="ipaddress"),
        Param("ipaddress"),
        Param("zoneid", "uuid"),
        Param("associatednetworkid", "uuid"),
        Param("networkid", "uuid"),
        Param("issourcenat", "boolean"),
        Param("isstaticnat", "boolean"),
        Param("allocatedonly", "boolean", description="default true"),
        Param("forvirtualnetwork", "boolean"),
        Param("vlanid", "uuid"),
        Param("state"),
        Param("vpcid", "uuid"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="publicipaddress",
    since="2.0.0",
)
async def list_public_ip_addresses(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(PublicIp).where(PublicIp.live())
        free = args["allocatedonly"] is False and call.caller.is_root_admin
        if free:
            query = query.where(PublicIp.state.in_(("Free", "Allocated")))
        else:
            query = query.where(PublicIp.state == "Allocated")
            query = await scoped(session, call.caller, args, query, PublicIp)
        if args["vpcid"]:
            return ListResult("publicipaddress", [])
        if args["id"]:
            query = query.where(PublicIp.uuid == args["id"])
        if args["ipaddress"]:
            query = query.where(PublicIp.address == args["ipaddress"])
        if args["zoneid"]:
            query = query.where(of_uuid(PublicIp.zone_id, Zone, args["zoneid"]))
        for name in ("associatednetworkid", "networkid"):
            if args[name]:
                query = query.where(of_uuid(PublicIp.network_id, Network, args[name]))
        if args["issourcenat"] is not None:
            query = query.where(PublicIp.source_nat.is_(args["issourcenat"]))
        if args["isstaticnat"] is not None:
            query = query.where(PublicIp.static_nat_vm_id.is_not(None) if args["isstaticnat"]
                                else PublicIp.static_nat_vm_id.is_(None))
        if args["vlanid"]:
            query = query.where(of_uuid(PublicIp.vlan_range_id, VlanIpRange, args["vlanid"]))
        if args["state"]:
            query = query.where(PublicIp.state == args["state"])
        ips, total = await paged(session, query.order_by(PublicIp.id), args)
        return ListResult("publicipaddress", await ip_answers(session, ips), total)


# -- static NAT -----------------------------------------------------------------------


@command(
    "enableStaticNat",
    description="Maps a public IP address one-to-one to an instance (inbound traffic still "
    "needs firewall rules)",
    params=[
        Param("ipaddressid", "uuid", required=True, resource="ipaddress"),
        Param("virtualmachineid", "uuid", required=True, resource="virtualmachine"),
        Param("networkid", "uuid"),
        Param("vmguestip"),
    ],
    response="success",
    since="2.0.0",
)
async def enable_static_nat(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["ipaddressid"])
        network = await ip_network(session, ip)
        vm, nic = await guest_vm(session, call, args["virtualmachineid"], network,
                                 args["vmguestip"])
        await lock_public_ip(session, ip)
        if ip.source_nat:
            raise param_error(f"{ip.address} is the network's source NAT address: static NAT "
                              "needs another address")
        if ip.static_nat_vm_id and ip.static_nat_vm_id != vm.id:
            raise conflict(f"{ip.address} has static NAT to another instance already")
        forwards = await session.scalar(select(FirewallRule.uuid).where(
            FirewallRule.ip_address_id == ip.id, FirewallRule.live(),
            FirewallRule.purpose.in_(("PortForwarding", "LoadBalancing")),
            FirewallRule.state.in_(LIVE_STATES)))
        if forwards:
            raise conflict(f"{ip.address} has port forwarding or load balancing rules (e.g. "
                           f"{forwards}): static NAT needs an address without them")
        other = await session.scalar(select(PublicIp.address).where(
            PublicIp.static_nat_vm_id == vm.id, PublicIp.id != ip.id, PublicIp.live()))
        if other:
            raise conflict(f"instance {vm.host_name} has static NAT on {other} already")
        ip.static_nat_vm_id, ip.static_nat_ip = vm.id, nic.ip_address
        network_id, ip_id = network.id, ip.id
        await session.commit()
    try:
        await sync.apply_network(call.server.orchestrator, network_id)
    except (sync.RouterRefused, sync.RouterUnreachable) as exc:
        await _clear_static_nat(call, ip_id)
        raise ApiError(530, str(exc)) from exc
    await call.server.events.record(call, "STATICNAT.ENABLE",
                                    f"static NAT {ip.address} -> {vm.host_name}", ip)
    return PlainResult({"success": True})


async def _clear_static_nat(call, ip_id: int) -> None:
    async with call.server.db.sessions() as session, session.begin():
        await session.execute(update(PublicIp).where(PublicIp.id == ip_id).values(
            static_nat_vm_id=None, static_nat_ip=None))


@command(
    "disableStaticNat",
    description="Removes an address's static NAT",
    params=[Param("ipaddressid", "uuid", required=True, resource="ipaddress")],
    is_async=True,
    instance_type="IpAddress",
    prepare=lambda call, args: _check_ip_id(call, {"id": args["ipaddressid"]}),
    since="2.0.0",
)
async def disable_static_nat(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["ipaddressid"])
        if not ip.static_nat_vm_id:
            raise param_error(f"{ip.address} has no static NAT")
        vm_id, vm_ip, network_id = ip.static_nat_vm_id, ip.static_nat_ip, ip.network_id
    await _clear_static_nat(call, ip.id)
    try:
        if network_id:
            await sync.apply_network(call.server.orchestrator, network_id)
    except (sync.RouterRefused, sync.RouterUnreachable) as exc:
        async with call.server.db.sessions() as session, session.begin():
            await session.execute(update(PublicIp).where(PublicIp.id == ip.id).values(
                static_nat_vm_id=vm_id, static_nat_ip=vm_ip))
        raise ApiError(530, str(exc)) from exc
    await call.server.events.record(call, "STATICNAT.DISABLE", f"static NAT off {ip.address}",
                                    ip)
    return PlainResult({"success": True})

