"""Load balancer rules and their members (the router's HAProxy).

A rule is a ``firewall_rules`` row of purpose LoadBalancing on a public IP;
its members are ``lb_members`` rows. As the firewall and forwarding commands,
each change is one async job: rows are written as Add or Revoke, the network's
routers get their new document, and the job ends when they have applied it or
fails with the router's words, leaving the rows as they were
(mgmt.orchestration.sync.apply_change).

Differences from CloudStack, on purpose: protocol ``udp`` is refused (HAProxy
balances TCP); ``http`` is accepted besides ``tcp`` and ``tcp-proxy`` (HTTP
mode: X-Forwarded-For, and cookie stickiness). The router opens the rule's
port to the rule's ``cidrlist`` itself; ``openfirewall`` (default true) also
records the matching firewall rule, as for port forwarding.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import new_id, not_found, of_uuid, paged
from mgmt.commands.ownership import owner_fields
from mgmt.commands.rulebase import (
    check_conflicts,
    cidr_list,
    guest_vm,
    ip_network,
    port_range,
    visible_ip,
)
from mgmt.commands.scope import scoped
from mgmt.commands.vms import vm_answers
from mgmt.db.models import Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule, LbMember, LbPolicy
from mgmt.db.tenancy import owned_by
from mgmt.db.types import utcnow
from mgmt.orchestration import sync

PURPOSE = "LoadBalancing"
ALGORITHMS = ("roundrobin", "leastconn", "source")
LB_PROTOCOLS = ("tcp", "tcp-proxy", "http")
#: Instance states that may be assigned (CloudStack: not destroyed or expunging).
ASSIGNABLE = ("Running", "Stopped", "Starting", "Stopping")


def lb_protocol(value: str | None) -> str:
    p = (value or "tcp").strip().lower()
    if p == "udp":
        raise param_error(
            "protocol udp is not supported: the router's load balancer (HAProxy) balances TCP only"
        )
    if p not in LB_PROTOCOLS:
        raise param_error(f"protocol {p[:20]!r} is not one of {', '.join(LB_PROTOCOLS)}")
    return p


async def visible_rule(session, call, uuid: str) -> FirewallRule:
    rule = await session.scalar(
        owned_by(
            select(FirewallRule).where(
                FirewallRule.uuid == uuid, FirewallRule.live(), FirewallRule.purpose == PURPOSE
            ),
            FirewallRule,
            call.caller,
            with_projects=True,
        )
    )
    if rule is None:
        raise not_found("load balancer rule", uuid)
    return rule


async def rule_answer(session, rule: FirewallRule) -> dict:
    ip = await session.get(PublicIp, rule.ip_address_id) if rule.ip_address_id else None
    network = await session.get_one(Network, rule.network_id)
    zone = await session.get(Zone, network.zone_id)
    answer = {
        "id": rule.uuid,
        "name": rule.name,
        "description": rule.description,
        "publicipid": ip.uuid if ip else None,
        "publicip": ip.address if ip else None,
        "publicport": str(rule.start_port),
        "privateport": str(rule.dest_start),
        "algorithm": rule.algorithm,
        "protocol": rule.lb_protocol or "tcp",
        "networkid": network.uuid,
        "cidrlist": rule.source_cidrs or "",
        "state": rule.state,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "fordisplay": True,
        "tags": [],
        **await owner_fields(session, rule.account_id, rule.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


async def _answer(call, rule_id: int) -> ObjectResult:
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        return ObjectResult("loadbalancer", await rule_answer(session, rule))


async def _check_public_ip(call, args) -> dict:
    if not args["publicipid"]:
        raise param_error(
            "publicipid is required: a load balancer rule of an isolated "
            "network listens on one of its public IP addresses"
        )
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["publicipid"])
        return {"jobinstanceid": ip.uuid}


@command(
    "createLoadBalancerRule",
    description="Creates a load balancer rule on a public IP address (add instances with "
    "assignToLoadBalancerRule)",
    params=[
        Param("name", required=True),
        Param("algorithm", required=True, choices=ALGORITHMS),
        Param("privateport", "integer", required=True),
        Param("publicport", "integer", required=True),
        Param(
            "publicipid",
            "uuid",
            resource="ipaddress",
            description="the public IP address (required: isolated networks)",
        ),
        Param("networkid", "uuid", description="the network (default: the address's)"),
        Param("zoneid", "uuid", description="accepted for compatibility"),
        Param("protocol", description="tcp (default), tcp-proxy or http; udp is not supported"),
        Param("cidrlist", "list", description="source CIDRs allowed (default 0.0.0.0/0)"),
        Param(
            "openfirewall", "boolean", description="also record the firewall rule (default true)"
        ),
        Param("description", length=4096),
        Param(
            "account", description="accepted for compatibility (the address's owner owns the rule)"
        ),
        Param("domainid", "uuid", description="accepted for compatibility"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="loadbalancer",
    instance_type="LoadBalancerRule",
    prepare=_check_public_ip,
    since="2.0.0",
)
async def create_load_balancer_rule(call, args) -> ObjectResult:
    proto = lb_protocol(args["protocol"])
    public = port_range(args["publicport"], None, "publicport")[0]
    private = port_range(args["privateport"], None, "privateport")[0]
    cidrs = cidr_list(args["cidrlist"])
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["publicipid"])
        network = await ip_network(session, ip)
        if args["networkid"] and args["networkid"] != network.uuid:
            raise param_error(
                f"public IP {ip.address} belongs to network {network.name}, not to networkid"
            )
        duplicate = await session.scalar(
            select(FirewallRule.uuid).where(
                FirewallRule.network_id == network.id,
                FirewallRule.purpose == PURPOSE,
                FirewallRule.name == args["name"],
                FirewallRule.live(),
            )
        )
        if duplicate:
            raise param_error(
                f"network {network.name} has a load balancer rule named "
                f"{args['name']!r} already ({duplicate})"
            )
        owner = {
            "network_id": network.id,
            "ip_address_id": ip.id,
            "account_id": network.account_id,
            "domain_id": network.domain_id,
        }
        rule = FirewallRule(
            **new_id(args),
            purpose=PURPOSE,
            traffic_type="Ingress",
            protocol="tcp",
            start_port=public,
            end_port=public,
            dest_start=private,
            dest_end=private,
            name=args["name"],
            description=args["description"],
            algorithm=args["algorithm"],
            lb_protocol=proto,
            source_cidrs=",".join(cidrs) or None,
            state="Add",
            **owner,
        )
        await check_conflicts(session, ip, rule)
        session.add(rule)
        await session.flush()
        keys = [("rule", rule.id)]
        if args["openfirewall"] is not False:
            opened = FirewallRule(
                purpose="Firewall",
                traffic_type="Ingress",
                protocol="tcp",
                start_port=public,
                end_port=public,
                source_cidrs=",".join(cidrs) or None,
                state="Add",
                related_id=rule.id,
                **owner,
            )
            await check_conflicts(session, ip, opened)
            session.add(opened)
            await session.flush()
            keys.append(("rule", opened.id))
        await session.commit()
        rule_id = rule.id
    await sync.apply_change(call.server.orchestrator, network.id, keys)
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        await call.server.events.record(
            call, "LB.CREATE", f"load balancer {rule.name} on {ip.address}:{public}", rule
        )
    return await _answer(call, rule_id)


async def _check_rule(call, args) -> dict:
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        return {"jobinstanceid": rule.uuid}


async def _forget(db, rule_id: int) -> None:
    """A deleted rule's members and policies go with it."""
    now = utcnow()
    async with db.sessions() as session:
        for model in (LbMember, LbPolicy):
            for row in (
                await session.scalars(select(model).where(model.rule_id == rule_id, model.live()))
            ).all():
                row.removed = now
        await session.commit()


@command(
    "deleteLoadBalancerRule",
    description="Deletes a load balancer rule (its members, policies and the firewall rule "
    "opened for it go with it)",
    params=[Param("id", "uuid", required=True, resource="loadbalancer")],
    is_async=True,
    instance_type="LoadBalancerRule",
    prepare=_check_rule,
    since="2.0.0",
)
async def delete_load_balancer_rule(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        related = (
            await session.scalars(
                select(FirewallRule).where(FirewallRule.related_id == rule.id, FirewallRule.live())
            )
        ).all()
        keys = []
        for row in (rule, *related):
            row.state = "Revoke"
            keys.append(("rule", row.id))
        rule_id, network_id = rule.id, rule.network_id
        await session.commit()
    await sync.apply_change(call.server.orchestrator, network_id, keys)
    await _forget(call.server.db, rule_id)
    await call.server.events.record(call, "LB.DELETE", f"deleted load balancer {rule.name}", rule)
    return PlainResult({"success": True})


@command(
    "updateLoadBalancerRule",
    description="Changes a load balancer rule's name, description, algorithm or protocol",
    params=[
        Param("id", "uuid", required=True, resource="loadbalancer"),
        Param("name"),
        Param("description", length=4096),
        Param("algorithm", choices=ALGORITHMS),
        Param("protocol", description="tcp, tcp-proxy or http"),
        Param("customid", description="accepted for compatibility"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    response="loadbalancer",
    instance_type="LoadBalancerRule",
    prepare=_check_rule,
    since="2.0.0",
)
async def update_load_balancer_rule(call, args) -> ObjectResult:
    proto = lb_protocol(args["protocol"]) if args["protocol"] else None
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        before = (rule.algorithm, rule.lb_protocol)
        if proto and proto != "http":
            cookie = await session.scalar(
                select(LbPolicy.method).where(
                    LbPolicy.rule_id == rule.id,
                    LbPolicy.live(),
                    LbPolicy.kind == "Stickiness",
                    LbPolicy.method.in_(("LbCookie", "AppCookie")),
                )
            )
            if cookie:
                raise param_error(
                    f"rule {rule.name} has {cookie} stickiness, which needs "
                    "protocol http: delete the policy first"
                )
        if args["name"]:
            rule.name = args["name"]
        if args["description"] is not None:
            rule.description = args["description"]
        rule.algorithm = args["algorithm"] or rule.algorithm
        rule.lb_protocol = proto or rule.lb_protocol
        changed = (rule.algorithm, rule.lb_protocol) != before
        rule_id, network_id = rule.id, rule.network_id
        await session.commit()
    if changed:
        try:
            await sync.apply_network(call.server.orchestrator, network_id)
        except (sync.RouterRefused, sync.RouterUnreachable) as exc:
            async with call.server.db.sessions() as session:
                rule = await session.get_one(FirewallRule, rule_id)
                rule.algorithm, rule.lb_protocol = before
                await session.commit()
            raise ApiError(sync.ROUTER_ERROR, str(exc)) from exc
    async with call.server.db.sessions() as session:
        rule = await session.get_one(FirewallRule, rule_id)
        await call.server.events.record(
            call, "LB.UPDATE", f"updated load balancer {rule.name}", rule
        )
    return await _answer(call, rule_id)


@command(
    "listLoadBalancerRules",
    description="Lists load balancer rules",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="loadbalancer"),
        Param("name"),
        Param("publicipid", "uuid"),
        Param("networkid", "uuid"),
        Param("virtualmachineid", "uuid", description="rules the instance is a member of"),
        Param("zoneid", "uuid"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="loadbalancerrule",
    since="2.0.0",
)
async def list_load_balancer_rules(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(FirewallRule).where(FirewallRule.live(), FirewallRule.purpose == PURPOSE)
        query = await scoped(session, call.caller, args, query, FirewallRule)
        if args["id"]:
            query = query.where(FirewallRule.uuid == args["id"])
        if args["name"]:
            query = query.where(FirewallRule.name == args["name"])
        if args["keyword"]:
            query = query.where(
                or_(
                    FirewallRule.name.contains(args["keyword"]),
                    FirewallRule.description.contains(args["keyword"]),
                )
            )
        if args["publicipid"]:
            query = query.where(of_uuid(FirewallRule.ip_address_id, PublicIp, args["publicipid"]))
        if args["networkid"]:
            query = query.where(of_uuid(FirewallRule.network_id, Network, args["networkid"]))
        if args["zoneid"]:
            query = query.where(
                FirewallRule.network_id.in_(
                    select(Network.id).where(of_uuid(Network.zone_id, Zone, args["zoneid"]))
                )
            )
        if args["virtualmachineid"]:
            query = query.where(
                FirewallRule.id.in_(
                    select(LbMember.rule_id).where(
                        LbMember.live(),
                        of_uuid(LbMember.vm_id, VmInstance, args["virtualmachineid"]),
                    )
                )
            )
        rules, total = await paged(session, query.order_by(FirewallRule.id), args)
        return ListResult("loadbalancerrule", [await rule_answer(session, r) for r in rules], total)


# -- members ------------------------------------------------------------------------------


def _member_targets(args) -> list[tuple[str, str | None]]:
    """(instance id, address or None) from virtualmachineids and vmidipmap."""
    targets: list[tuple[str, str | None]] = [(v, None) for v in args["virtualmachineids"] or []]
    for n, entry in enumerate(args["vmidipmap"] or []):
        vm, ip = entry.get("vmid"), entry.get("vmip")
        if not vm or not ip:
            raise param_error(f"vmidipmap[{n}] needs vmid and vmip")
        targets.append((vm, ip))
    if not targets:
        raise param_error("give virtualmachineids or vmidipmap")
    return targets


MEMBER_PARAMS = [
    Param("id", "uuid", required=True, resource="loadbalancer"),
    Param("virtualmachineids", "list", items="uuid"),
    Param(
        "vmidipmap",
        "map",
        description="vmidipmap[0].vmid, vmidipmap[0].vmip: an "
        "instance and its address in the rule's network",
    ),
]


@command(
    "assignToLoadBalancerRule",
    description="Adds instances of the rule's network to a load balancer rule",
    params=MEMBER_PARAMS,
    is_async=True,
    instance_type="LoadBalancerRule",
    prepare=_check_rule,
    since="2.0.0",
)
async def assign_to_load_balancer_rule(call, args) -> PlainResult:
    targets = _member_targets(args)
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        network = await session.get_one(Network, rule.network_id)
        members = []
        for vm_uuid, address in targets:
            vm, nic = await guest_vm(session, call, vm_uuid, network, address)
            taken = await session.scalar(
                select(LbMember.id).where(
                    LbMember.rule_id == rule.id,
                    LbMember.vm_id == vm.id,
                    LbMember.ip == nic.ip_address,
                    LbMember.live(),
                )
            )
            if taken or any(m.vm_id == vm.id and m.ip == nic.ip_address for m in members):
                raise param_error(
                    f"instance {vm.host_name} ({nic.ip_address}) is already "
                    f"assigned to load balancer rule {rule.name}"
                )
            members.append(LbMember(rule_id=rule.id, vm_id=vm.id, ip=nic.ip_address, state="Add"))
        session.add_all(members)
        try:
            await session.commit()
        except IntegrityError:  # the same instance assigned by a concurrent job
            raise param_error(
                f"an instance is already assigned to load balancer rule {rule.name}"
            ) from None
        keys = [("member", m.id) for m in members]
        network_id = network.id
    await sync.apply_change(call.server.orchestrator, network_id, keys)
    await call.server.events.record(
        call,
        "LB.ASSIGN.TO.RULE",
        f"assigned {len(keys)} instance(s) to load balancer {rule.name}",
        rule,
    )
    return PlainResult({"success": True})


@command(
    "removeFromLoadBalancerRule",
    description="Removes instances from a load balancer rule",
    params=MEMBER_PARAMS,
    is_async=True,
    instance_type="LoadBalancerRule",
    prepare=_check_rule,
    since="2.0.0",
)
async def remove_from_load_balancer_rule(call, args) -> PlainResult:
    targets = _member_targets(args)
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        keys = []
        for vm_uuid, address in targets:
            query = (
                select(LbMember)
                .join(VmInstance, VmInstance.id == LbMember.vm_id)
                .where(
                    LbMember.rule_id == rule.id,
                    LbMember.live(),
                    LbMember.state.in_(("Add", "Active")),
                    VmInstance.uuid == vm_uuid,
                )
            )
            if address:
                query = query.where(LbMember.ip == address)
            found = (await session.scalars(query)).all()
            if not found:
                raise param_error(
                    f"instance {vm_uuid} is not assigned to load balancer rule "
                    f"{rule.name}" + (f" with {address}" if address else "")
                )
            for member in found:
                member.state = "Revoke"
                keys.append(("member", member.id))
        network_id = rule.network_id
        await session.commit()
    await sync.apply_change(call.server.orchestrator, network_id, keys)
    await call.server.events.record(
        call,
        "LB.REMOVE.FROM.RULE",
        f"removed {len(keys)} instance(s) from load balancer {rule.name}",
        rule,
    )
    return PlainResult({"success": True})


@command(
    "listLoadBalancerRuleInstances",
    description="Lists the instances of a load balancer rule (applied=false: the network's "
    "instances that are not)",
    params=[
        *PAGING,
        Param("id", "uuid", required=True, resource="loadbalancer"),
        Param("applied", "boolean", description="true (default): assigned instances"),
        Param("lbvmips", "boolean", description="also the member addresses of each"),
    ],
    list_key="loadbalancerruleinstance",
    since="2.0.0",
)
async def list_load_balancer_rule_instances(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        rule = await visible_rule(session, call, args["id"])
        members = (
            await session.scalars(
                select(LbMember)
                .where(LbMember.rule_id == rule.id, LbMember.live(), LbMember.state != "Revoke")
                .order_by(LbMember.id)
            )
        ).all()
        ips: dict[int, list[str]] = {}
        for m in members:
            ips.setdefault(m.vm_id, []).append(m.ip)
        query = select(VmInstance).where(VmInstance.live(), VmInstance.type == "User")
        if args["applied"] is False:
            query = query.where(
                VmInstance.id.in_(
                    select(Nic.vm_id).where(Nic.network_id == rule.network_id, Nic.live())
                ),
                VmInstance.id.not_in(list(ips) or [-1]),
                VmInstance.state.in_(ASSIGNABLE),
            )
        else:
            query = query.where(VmInstance.id.in_(list(ips) or [-1]))
        vms, total = await paged(session, query.order_by(VmInstance.id), args)
        answers = await vm_answers(session, list(vms), call.caller.is_root_admin)
        if args["lbvmips"]:
            by_uuid = {v.uuid: v.id for v in vms}
            return ListResult(
                "lbrulevmidip",
                [
                    {
                        "loadbalancerruleinstance": a,
                        "lbvmipaddresses": ips.get(by_uuid[a["id"]], []),
                    }
                    for a in answers
                ],
                total,
            )
        return ListResult("loadbalancerruleinstance", answers, total)
