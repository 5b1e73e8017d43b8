"""Firewall (ingress and egress) and port forwarding rules.

Each create or delete is one async job: the rule is written (state Add or
Revoke), the network's routers get their new document, and the job ends when
they have applied it, or fails with the router's words and leaves the rule as
it was (mgmt.orchestration.sync.apply_change).
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import new_id, not_found, of_uuid, paged
from mgmt.commands.rulebase import (
    check_conflicts,
    cidr_list,
    firewall_fields,
    guest_vm,
    icmp,
    ip_network,
    port_range,
    protocol,
    visible_ip,
    visible_network,
)
from mgmt.commands.scope import scoped
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule
from mgmt.db.tenancy import owned_by
from mgmt.orchestration import sync

FIREWALL_PROTOCOLS = ("tcp", "udp", "icmp", "all")


def _ports_of(args, proto: str) -> dict:
    if proto in ("tcp", "udp"):
        start, end = port_range(args["startport"], args["endport"])
        if args.get("icmptype") is not None or args.get("icmpcode") is not None:
            raise param_error("icmptype and icmpcode are only for protocol icmp")
        return {"start_port": start, "end_port": end}
    if args["startport"] is not None or args["endport"] is not None:
        raise param_error(f"startport and endport are not allowed for protocol {proto}")
    if proto == "icmp":
        return {"icmp_type": icmp(args["icmptype"], "icmptype"),
                "icmp_code": icmp(args["icmpcode"], "icmpcode")}
    return {}


async def _visible_rule(session, call, uuid: str, purpose: str) -> FirewallRule:
    rule = await session.scalar(owned_by(
        select(FirewallRule).where(FirewallRule.uuid == uuid, FirewallRule.live(),
                                   FirewallRule.purpose == purpose),
        FirewallRule, call.caller, with_projects=True))
    if rule is None:
        what = {"PortForwarding": "port forwarding rule"}.get(purpose, "firewall rule")
        raise not_found(what, uuid)
    return rule


async def _revoke(call, rule_id: int) -> None:
    """Mark the rule (and the firewall rule opened for it) Revoke and apply."""
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        related = (await session.scalars(select(FirewallRule).where(
            FirewallRule.related_id == rule.id, FirewallRule.live()))).all()
        keys = []
        for row in (rule, *related):
            row.state = "Revoke"
            keys.append(("rule", row.id))
        network_id = rule.network_id
        await session.commit()
    await sync.apply_change(call.server.orchestrator, network_id, keys)


async def _ip_answer(session, rule: FirewallRule) -> tuple[PublicIp | None, Network]:
    ip = await session.get(PublicIp, rule.ip_address_id) if rule.ip_address_id else None
    return ip, await session.get_one(Network, rule.network_id)


# -- ingress firewall ---------------------------------------------------------------------


async def _check_ip(call, args) -> dict:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["ipaddressid"])
        return {"jobinstanceid": ip.uuid}


@command(
    "createFirewallRule",
    description="Allows traffic to a public IP address (ingress; everything else is denied)",
    params=[
        Param("ipaddressid", "uuid", required=True, resource="ipaddress"),
        Param("protocol", required=True, description="tcp, udp, icmp or all"),
        Param("startport", "integer"),
        Param("endport", "integer"),
        Param("cidrlist", "list", description="source CIDRs (default 0.0.0.0/0)"),
        Param("icmptype", "integer"),
        Param("icmpcode", "integer"),
        Param("type", description="accepted for compatibility (user)"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="firewallrule",
    instance_type="FirewallRule",
    prepare=_check_ip,
    since="3.0.0",
)
async def create_firewall_rule(call, args) -> ObjectResult:
    proto = protocol(args["protocol"], FIREWALL_PROTOCOLS)
    ports = _ports_of(args, proto)
    cidrs = cidr_list(args["cidrlist"])
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["ipaddressid"])
        network = await ip_network(session, ip)
        rule = FirewallRule(**new_id(args), purpose="Firewall", traffic_type="Ingress",
                            network_id=network.id, ip_address_id=ip.id,
                            account_id=ip.account_id or network.account_id,
                            domain_id=network.domain_id, protocol=proto,
                            source_cidrs=",".join(cidrs) or None, state="Add", **ports)
        await check_conflicts(session, ip, rule)
        session.add(rule)
        await session.commit()
        rule_id = rule.id
    await sync.apply_change(call.server.orchestrator, network.id, [("rule", rule_id)])
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        await call.server.events.record(call, "FIREWALL.OPEN",
                                        f"opened {proto} on {ip.address}", rule)
        return ObjectResult("firewallrule", firewall_fields(rule, *await _ip_answer(session, rule)))


async def _check_rule(call, args, purpose: str = "Firewall") -> dict:
    async with call.server.db.sessions() as session:
        rule = await _visible_rule(session, call, args["id"], purpose)
        return {"jobinstanceid": rule.uuid}


@command(
    "deleteFirewallRule",
    description="Deletes a firewall rule (ingress)",
    params=[Param("id", "uuid", required=True, resource="firewallrule")],
    is_async=True,
    instance_type="FirewallRule",
    prepare=_check_rule,
    since="3.0.0",
)
async def delete_firewall_rule(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        rule = await _visible_rule(session, call, args["id"], "Firewall")
    await _revoke(call, rule.id)
    await call.server.events.record(call, "FIREWALL.CLOSE", "closed a firewall rule", rule)
    return PlainResult({"success": True})


async def _list_rules(call, args, purpose: str, traffic: str, key: str, fields) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(FirewallRule).where(FirewallRule.live(), FirewallRule.purpose == purpose,
                                           FirewallRule.traffic_type == traffic)
        query = await scoped(session, call.caller, args, query, FirewallRule)
        if args.get("id"):
            query = query.where(FirewallRule.uuid == args["id"])
        if args.get("ipaddressid"):
            query = query.where(of_uuid(FirewallRule.ip_address_id, PublicIp,
                                        args["ipaddressid"]))
        if args.get("networkid"):
            query = query.where(of_uuid(FirewallRule.network_id, Network, args["networkid"]))
        rules, total = await paged(session, query.order_by(FirewallRule.id), args)
        out = []
        for rule in rules:
            out.append(await fields(session, rule))
        return ListResult(key, out, total)


async def _fw_fields(session, rule: FirewallRule) -> dict:
    return firewall_fields(rule, *await _ip_answer(session, rule))


LIST_PARAMS = (
    *PAGING,
    *SCOPE,
    Param("id", "uuid"),
    Param("ipaddressid", "uuid"),
    Param("networkid", "uuid"),
    Param("fordisplay", "boolean", description="accepted for compatibility"),
)


@command("listFirewallRules", description="Lists ingress firewall rules",
         params=list(LIST_PARAMS), list_key="firewallrule", since="3.0.0")
async def list_firewall_rules(call, args) -> ListResult:
    return await _list_rules(call, args, "Firewall", "Ingress", "firewallrule", _fw_fields)


# -- egress firewall ----------------------------------------------------------------------


async def _check_network_arg(call, args) -> dict:
    async with call.server.db.sessions() as session:
        network = await visible_network(session, call, args["networkid"])
        return {"jobinstanceid": network.uuid}


@command(
    "createEgressFirewallRule",
    description="Adds an egress rule: traffic it matches gets the opposite of the network's "
    "default egress policy",
    params=[
        Param("networkid", "uuid", required=True, resource="network"),
        Param("protocol", required=True, description="tcp, udp, icmp or all"),
        Param("startport", "integer"),
        Param("endport", "integer"),
        Param("cidrlist", "list", description="source CIDRs in the network (default: all)"),
        Param("destcidrlist", "list", description="destination CIDRs (default 0.0.0.0/0)"),
        Param("icmptype", "integer"),
        Param("icmpcode", "integer"),
        Param("type", description="accepted for compatibility"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="firewallrule",
    instance_type="FirewallRule",
    prepare=_check_network_arg,
    since="4.2.0",
)
async def create_egress_firewall_rule(call, args) -> ObjectResult:
    proto = protocol(args["protocol"], FIREWALL_PROTOCOLS)
    ports = _ports_of(args, proto)
    sources = cidr_list(args["cidrlist"])
    dests = cidr_list(args["destcidrlist"], "destcidrlist")
    async with call.server.db.sessions() as session:
        network = await visible_network(session, call, args["networkid"])
        guest = ipaddress.IPv4Network(network.cidr)
        for cidr in sources:
            if not ipaddress.IPv4Network(cidr).subnet_of(guest):
                raise param_error(f"cidrlist: {cidr} is not inside the network's {guest}")
        rule = FirewallRule(**new_id(args), purpose="Firewall", traffic_type="Egress",
                            network_id=network.id, account_id=network.account_id,
                            domain_id=network.domain_id, protocol=proto,
                            source_cidrs=",".join(sources) or None,
                            dest_cidrs=",".join(dests) or None, state="Add", **ports)
        session.add(rule)
        await session.commit()
        rule_id = rule.id
    await sync.apply_change(call.server.orchestrator, network.id, [("rule", rule_id)])
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        await call.server.events.record(call, "FIREWALL.EGRESS.OPEN",
                                        f"added an egress rule to {network.name}", rule)
        return ObjectResult("firewallrule", await _fw_fields(session, rule))


@command(
    "deleteEgressFirewallRule",
    description="Deletes an egress firewall rule",
    params=[Param("id", "uuid", required=True, resource="firewallrule")],
    is_async=True,
    instance_type="FirewallRule",
    prepare=_check_rule,
    since="4.2.0",
)
async def delete_egress_firewall_rule(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        rule = await _visible_rule(session, call, args["id"], "Firewall")
    await _revoke(call, rule.id)
    await call.server.events.record(call, "FIREWALL.EGRESS.CLOSE", "removed an egress rule",
                                    rule)
    return PlainResult({"success": True})


@command("listEgressFirewallRules", description="Lists egress firewall rules",
         params=list(LIST_PARAMS), list_key="firewallrule", since="4.2.0")
async def list_egress_firewall_rules(call, args) -> ListResult:
    return await _list_rules(call, args, "Firewall", "Egress", "firewallrule", _fw_fields)


# -- port forwarding ----------------------------------------------------------------------


def pf_fields(rule: FirewallRule, ip: PublicIp | None, network: Network,
              vm: VmInstance | None) -> dict:
    answer = {
        "id": rule.uuid,
        "protocol": rule.protocol,
        "publicport": str(rule.start_port),
        "publicendport": str(rule.end_port or rule.start_port),
        "privateport": str(rule.dest_start),
        "privateendport": str(rule.dest_end or rule.dest_start),
        "ipaddressid": ip.uuid if ip else None,
        "ipaddress": ip.address if ip else None,
        "virtualmachineid": vm.uuid if vm else None,
        "virtualmachinename": vm.host_name if vm else None,
        "virtualmachinedisplayname": vm.display_name if vm else None,
        "vmguestip": rule.dest_ip,
        "networkid": network.uuid,
        "state": rule.state,
        "cidrlist": rule.source_cidrs or "",
        "fordisplay": True,
        "tags": [],
    }
    return {k: v for k, v in answer.items() if v is not None}


async def _pf_fields(session, rule: FirewallRule) -> dict:
    vm = await session.get(VmInstance, rule.vm_id) if rule.vm_id else None
    return pf_fields(rule, *await _ip_answer(session, rule), vm)


@command(
    "createPortForwardingRule",
    description="Forwards public ports of an IP address to an instance (and, with "
    "openfirewall, the default, opens them in the firewall)",
    params=[
        Param("ipaddressid", "uuid", required=True, resource="ipaddress"),
        Param("protocol", required=True, description="tcp or udp"),
        Param("publicport", "integer", required=True),
        Param("publicendport", "integer"),
        Param("privateport", "integer", required=True),
        Param("privateendport", "integer"),
        Param("virtualmachineid", "uuid", required=True, resource="virtualmachine"),
        Param("vmguestip", description="the instance's address (default: its NIC's)"),
        Param("networkid", "uuid", description="the network (default: the IP's)"),
        Param("openfirewall", "boolean", description="also create the firewall rule "
              "(default true)"),
        Param("cidrlist", "list", description="source CIDRs allowed"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="portforwardingrule",
    instance_type="FirewallRule",
    prepare=_check_ip,
    since="2.0.0",
)
async def create_port_forwarding_rule(call, args) -> ObjectResult:
    proto = protocol(args["protocol"], ("tcp", "udp"))
    pub = port_range(args["publicport"], args["publicendport"], "publicport")
    priv = port_range(args["privateport"], args["privateendport"], "privateport")
    if args["privateendport"] is not None and pub[1] - pub[0] != priv[1] - priv[0]:
        raise param_error(f"public ports {pub[0]}-{pub[1]} and private ports "
                          f"{priv[0]}-{priv[1]} must be ranges of the same size")
    cidrs = cidr_list(args["cidrlist"])
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["ipaddressid"])
        network = await ip_network(session, ip)
        if args["networkid"] and args["networkid"] != network.uuid:
            raise param_error(f"public IP {ip.address} belongs to network {network.name}, "
                              "not to networkid")
        vm, nic = await guest_vm(session, call, args["virtualmachineid"], network,
                                 args["vmguestip"])
        owner = {"network_id": network.id, "ip_address_id": ip.id,
                 "account_id": network.account_id, "domain_id": network.domain_id}
        rule = FirewallRule(**new_id(args), purpose="PortForwarding", traffic_type="Ingress",
                            protocol=proto, start_port=pub[0], end_port=pub[1],
                            source_cidrs=",".join(cidrs) or None, state="Add", vm_id=vm.id,
                            dest_ip=nic.ip_address, dest_start=priv[0],
                            dest_end=priv[0] + (pub[1] - pub[0]), **owner)
        await check_conflicts(session, ip, rule)
        session.add(rule)
        await session.flush()
        keys = [("rule", rule.id)]
        if args["openfirewall"] is not False:
            opened = FirewallRule(purpose="Firewall", traffic_type="Ingress", protocol=proto,
                                  start_port=pub[0], end_port=pub[1],
                                  source_cidrs=",".join(cidrs) or None, state="Add",
                                  related_id=rule.id, **owner)
            await check_conflicts(session, ip, opened)
            session.add(opened)
            await session.flush()
            keys.append(("rule", opened.id))
        await session.commit()
        rule_id = rule.id
    await sync.apply_change(call.server.orchestrator, network.id, keys)
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        await call.server.events.record(call, "NET.RULEADD",
                                        f"forwarded {ip.address}:{pub[0]} to "
                                        f"{vm.host_name}:{priv[0]}", rule)
        return ObjectResult("portforwardingrule", await _pf_fields(session, rule))


@command(
    "deletePortForwardingRule",
    description="Deletes a port forwarding rule (and the firewall rule opened for it)",
    params=[Param("id", "uuid", required=True, resource="portforwardingrule")],
    is_async=True,
    instance_type="FirewallRule",
    prepare=lambda call, args: _check_rule(call, args, "PortForwarding"),
    since="2.0.0",
)
async def delete_port_forwarding_rule(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        rule = await _visible_rule(session, call, args["id"], "PortForwarding")
    await _revoke(call, rule.id)
    await call.server.events.record(call, "NET.RULEDELETE",
                                    "deleted a port forwarding rule", rule)
    return PlainResult({"success": True})


@command("listPortForwardingRules", description="Lists port forwarding rules",
         params=list(LIST_PARAMS), list_key="portforwardingrule", since="2.0.0")
async def list_port_forwarding_rules(call, args) -> ListResult:
    return await _list_rules(call, args, "PortForwarding", "Ingress", "portforwardingrule",
                             _pf_fields)
