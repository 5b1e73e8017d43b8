"""Guest networks: createNetwork, listNetworks, updateNetwork, deleteNetwork, restartNetwork.

For now networks are records only: the virtual routers that implement them (and
move them from ``Allocated`` to ``Implemented``) come in a later issue, which also
makes restartNetwork re-push the router's document. Only isolated networks
outside VPCs can be created so far.
"""

from __future__ import annotations

import ipaddress
import re

from sqlalchemy import or_, select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.catalog import _service_fields
from mgmt.commands.common import date, not_found, of_uuid, paged
from mgmt.commands.ownership import owner_account
from mgmt.commands.scope import scoped
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.catalog import (
    NetworkOffering,
    NetworkOfferingService,
    offers_redundant_router,
)
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.networks import Network
from mgmt.db.tenancy import owned_by
from mgmt.orchestration import networks as orchestration

#: CloudStack's default guest CIDR of a zone (and of a network in a zone without one).
DEFAULT_CIDR = "10.1.1.0/24"
#: guest.domain.suffix: a network's default DNS domain is cs<account id in hex><suffix>.
GUEST_DOMAIN_SUFFIX = "cloud.internal"
_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


# --- helpers ------------------------------------------------------------------------------


def _ipv4(name: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise param_error(f"{name} {value[:60]!r} is not an IPv4 address") from None


def _guest_subnet(args, zone: Zone) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    """(subnet, gateway) from gateway/netmask, else from the zone's guest CIDR."""
    gateway, netmask = args["gateway"], args["netmask"]
    if bool(gateway) != bool(netmask):
        raise param_error("gateway and netmask must be given together")
    if gateway:
        address = _ipv4("gateway", gateway)
        try:
            subnet = ipaddress.IPv4Network(f"{gateway}/{netmask}", strict=False)
        except ValueError:
            raise param_error(f"netmask {netmask[:60]!r} is not an IPv4 netmask") from None
    else:
        try:
            subnet = ipaddress.IPv4Network(zone.guest_cidr or DEFAULT_CIDR, strict=False)
        except ValueError:  # a zone with a broken guest CIDR: CloudStack's default
            subnet = ipaddress.IPv4Network(DEFAULT_CIDR)
        address = subnet.network_address + 1
    if subnet.prefixlen > 30:
        raise param_error(f"netmask {subnet.netmask}: a guest network needs at least a /30")
    if address in (subnet.network_address, subnet.broadcast_address):
        raise param_error(f"gateway {address} is the network or broadcast address of {subnet}")
    return subnet, address


def _ip_range(args, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address):
    start = _ipv4("startip", args["startip"]) if args["startip"] else None
    end = _ipv4("endip", args["endip"]) if args["endip"] else start
    if end is not None and start is None:
        raise param_error("endip needs startip")
    if start is None:
        return None, None
    for name, addr in (("startip", start), ("endip", end)):
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise param_error(f"{name} {addr} is not a host address of {subnet}")
    if start > end:
        raise param_error(f"startip {start} is after endip {end}")
    if start <= gateway <= end:
        raise param_error(f"the range {start}-{end} contains the gateway {gateway}")
    return str(start), str(end)


def _dns_name(value: str | None) -> str | None:
    if value is not None and not _DNS_NAME.fullmatch(value):
        raise param_error(f"networkdomain {value[:60]!r} is not a DNS domain name")
    return value


def _dns_server(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise param_error(f"{name} {value[:60]!r} is not an IP address") from None


async def _visible_network(session, call, uuid: str) -> Network:
    network = await session.scalar(
        owned_by(select(Network).where(Network.uuid == uuid, Network.live()), Network, call.caller)
    )
    if network is None:
        raise not_found("network", uuid)
    return network


def network_fields(
    n: Network, zone: Zone, offering: NetworkOffering, services, account: Account, domain: Domain
) -> dict:
    return {
        "id": n.uuid,
        "name": n.name,
        "displaytext": n.display_text,
        "state": n.state,
        "zoneid": zone.uuid,
        "zonename": zone.name,
        "networkofferingid": offering.uuid,
        "networkofferingname": offering.name,
        "networkofferingdisplaytext": offering.display_text,
        "networkofferingconservemode": offering.conserve_mode,
        "networkofferingavailability": offering.availability,
        "cidr": n.cidr,
        "gateway": n.gateway,
        "netmask": n.netmask,
        "networkdomain": n.network_domain,
        "dns1": n.dns1,
        "dns2": n.dns2,
        "vlan": n.vlan,
        "broadcasturi": f"vxlan://{n.vlan}" if n.vlan else None,
        "broadcastdomaintype": "Vxlan",
        "account": account.name,
        "domainid": domain.uuid,
        "domain": domain.name,
        "domainpath": domain.path,
        "type": offering.guest_ip_type,
        "traffictype": "Guest",
        "service": _service_fields(services),
        "tags": [],
        "restartrequired": False,
        "ispersistent": offering.is_persistent,
        "redundantrouter": offers_redundant_router(services),
        "acltype": "Account",
        "issystem": False,
        "isdefault": False,
        "specifyipranges": offering.specify_ip_ranges,
        "canusefordeploy": True,
        "displaynetwork": True,
        "strechedl2subnet": False,
        "related": n.uuid,
        "created": date(n.created),
        "hasannotations": False,
    }


async def _answers(session, networks: list[Network]) -> list[dict]:
    async def by_id(model, ids):
        ids = set(ids)
        if not ids:
            return {}
        return {r.id: r for r in (await session.scalars(select(model).where(model.id.in_(ids))))}

    zones = await by_id(Zone, (n.zone_id for n in networks))
    offerings = await by_id(NetworkOffering, (n.network_offering_id for n in networks))
    accounts = await by_id(Account, (n.account_id for n in networks))
    domains = await by_id(Domain, (n.domain_id for n in networks))
    services: dict[int, list] = {i: [] for i in offerings}
    if offerings:
        rows = await session.scalars(
            select(NetworkOfferingService)
            .where(
                NetworkOfferingService.offering_id.in_(list(offerings)),
                NetworkOfferingService.live(),
            )
            .order_by(NetworkOfferingService.id)
        )
        for row in rows.all():
            services[row.offering_id].append(row)
    return [
        network_fields(
            n,
            zones[n.zone_id],
            offerings[n.network_offering_id],
            services[n.network_offering_id],
            accounts[n.account_id],
            domains[n.domain_id],
        )
        for n in networks
    ]


# --- commands -----------------------------------------------------------------------------


@command(
    "createNetwork",
    description="Creates an isolated guest network (a record: routers implement it later)",
    params=[
        Param("name", required=True, description="network name"),
        Param("displaytext", length=4096, description="description (default: the name)"),
        Param(
            "networkofferingid",
            "uuid",
            required=True,
            description="an Enabled offering of guestiptype Isolated",
        ),
        Param("zoneid", "uuid", required=True, description="the zone"),
        Param("gateway", description="IPv4 gateway (default: from the zone's guest CIDR)"),
        Param("netmask", description="IPv4 netmask, with gateway"),
        Param("startip", description="first address for guests"),
        Param("endip", description="last address for guests (default: startip)"),
        Param("networkdomain", description="DNS domain (default cs<account>cloud.internal)"),
        Param("account", description="owner account (with domainid)"),
        Param("domainid", "uuid", description="owner account's domain", resource="domain"),
        Param("projectid", "uuid", description="the project that owns it", resource="project"),
        Param("dns1", description="first DNS server for guests"),
        Param("dns2", description="second DNS server for guests"),
        Param("vlan", description="VLAN id (root admin, offerings with specifyvlan)"),
        Param("acltype", choices=("Account", "Domain"), description="Account"),
        Param("vpcid", "uuid", description="not supported yet"),
        Param("aclid", "uuid", description="not supported yet"),
        Param("physicalnetworkid", "uuid", description="accepted for compatibility"),
        Param("subdomainaccess", "boolean", description="accepted for compatibility"),
        Param("displaynetwork", "boolean", description="accepted for compatibility"),
    ],
    response="network",
    since="3.0.0",
)
async def create_network(call, args) -> ObjectResult:
    if args["vpcid"] or args["aclid"]:
        raise ApiError(431, "VPC tiers are not supported yet (vpcid, aclid)")
    if args["acltype"] == "Domain":
        raise ApiError(
            431, "acltype Domain is for shared networks; isolated networks are Account networks"
        )
    networkdomain = _dns_name(args["networkdomain"])
    dns1 = _dns_server("dns1", args["dns1"])
    dns2 = _dns_server("dns2", args["dns2"])
    async with call.server.db.sessions() as session:
        zone = await session.scalar(select(Zone).where(Zone.uuid == args["zoneid"], Zone.live()))
        if zone is None:
            raise not_found("zone", args["zoneid"])
        if zone.allocation_state != "Enabled" and not call.caller.is_root_admin:
            raise ApiError(531, f"zone {zone.name} is disabled")
        offering = await session.scalar(
            select(NetworkOffering).where(
                NetworkOffering.uuid == args["networkofferingid"], NetworkOffering.live()
            )
        )
        if offering is None:
            raise not_found("network offering", args["networkofferingid"])
        if offering.state != "Enabled":
            raise ApiError(431, f"network offering {offering.name} is not Enabled")
        if offering.guest_ip_type != "Isolated" or offering.for_vpc:
            raise ApiError(
                431,
                f"network offering {offering.name} is not for isolated "
                "networks (guestiptype Isolated, not for VPC)",
            )
        if args["vlan"] is not None:
            if not call.caller.is_root_admin or not offering.specify_vlan:
                raise ApiError(
                    431,
                    "vlan can be given only by a root admin, with an offering that has specifyvlan",
                )
            vlan = args["vlan"].removeprefix("vlan://")
            if not vlan.isdigit() or not 1 <= int(vlan) <= 4094:
                raise param_error(f"vlan {args['vlan'][:60]!r} is not within 1-4094")
        else:
            vlan = None
        owner = await owner_account(
            session, call, args["account"], args["domainid"], args["projectid"]
        )
        subnet, gateway = _guest_subnet(args, zone)
        start, end = _ip_range(args, subnet, gateway)
        network = Network(
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            zone_id=zone.id,
            network_offering_id=offering.id,
            account_id=owner.id,
            domain_id=owner.domain_id,
            cidr=str(subnet),
            gateway=str(gateway),
            netmask=str(subnet.netmask),
            start_ip=start,
            end_ip=end,
            network_domain=networkdomain or f"cs{owner.id:x}{GUEST_DOMAIN_SUFFIX}",
            state="Allocated",
            vlan=vlan,
            dns1=dns1,
            dns2=dns2,
        )
        session.add(network)
        await session.commit()
        [answer] = await _answers(session, [network])
        await call.server.events.record(
            call, "NETWORK.CREATE", f"created network {network.name}", network
        )
        return ObjectResult("network", answer)


@command(
    "listNetworks",
    description="Lists guest networks",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="network"),
        Param("name", description="network name"),
        Param("zoneid", "uuid"),
        Param("type", choices=("Isolated", "Shared", "L2")),
        Param("networkofferingid", "uuid"),
        Param("traffictype", description="Guest (only guest networks exist)"),
        Param("issystem", "boolean", description="system networks: none are listed"),
        Param("vpcid", "uuid", description="networks of a VPC: none yet"),
        Param("forvpc", "boolean", description="VPC tiers: none yet"),
        Param("physicalnetworkid", "uuid", description="accepted for compatibility"),
        Param("acltype", choices=("Account", "Domain")),
        Param("restartrequired", "boolean"),
        Param("canusefordeploy", "boolean", description="accepted for compatibility"),
        Param("supportedservices", "list", description="accepted for compatibility"),
    ],
    list_key="network",
    since="3.0.0",
)
async def list_networks(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Network).where(Network.live())
        nothing = (
            args["issystem"]
            or args["vpcid"]
            or args["forvpc"]
            or args["restartrequired"]
            or args["acltype"] == "Domain"
            or (args["traffictype"] and args["traffictype"].lower() != "guest")
        )
        query = await scoped(session, call.caller, args, query, Network)
        if args["id"]:
            query = query.where(Network.uuid == args["id"])
        if args["name"]:
            query = query.where(Network.name == args["name"])
        if args["zoneid"]:
            query = query.where(of_uuid(Network.zone_id, Zone, args["zoneid"]))
        if args["networkofferingid"]:
            query = query.where(
                Network.network_offering_id.in_(
                    select(NetworkOffering.id).where(
                        NetworkOffering.uuid == args["networkofferingid"]
                    )
                )
            )
        if args["type"]:
            query = query.where(
                Network.network_offering_id.in_(
                    select(NetworkOffering.id).where(NetworkOffering.guest_ip_type == args["type"])
                )
            )
        if args["keyword"]:
            query = query.where(
                or_(
                    Network.name.contains(args["keyword"], autoescape=True),
                    Network.display_text.contains(args["keyword"], autoescape=True),
                )
            )
        if nothing:
            return ListResult("network", [])
        networks, total = await paged(session, query.order_by(Network.id), args)
        return ListResult("network", await _answers(session, networks), total)


async def _check_network(call, args) -> dict:
    """Refuse a missing or foreign id before a job exists (and again when the job runs)."""
    async with call.server.db.sessions() as session:
        network = await _visible_network(session, call, args["id"])
        return {"jobinstanceid": network.uuid}


@command(
    "updateNetwork",
    description="Updates a network's name, display text, network domain or DNS servers",
    params=[
        Param("id", "uuid", required=True, resource="network"),
        Param("name"),
        Param("displaytext", length=4096),
        Param("networkdomain"),
        Param("dns1"),
        Param("dns2"),
        Param("networkofferingid", "uuid", description="only the network's own offering"),
        Param("changecidr", "boolean", description="accepted for compatibility"),
        Param("guestvmcidr", description="not supported yet"),
        Param("forced", "boolean", description="accepted for compatibility"),
        Param("displaynetwork", "boolean", description="accepted for compatibility"),
        Param("updateinsequence", "boolean", description="accepted for compatibility"),
        Param("hideipaddressusage", "boolean", description="accepted for compatibility"),
    ],
    response="network",
    is_async=True,
    instance_type="Network",
    resumable=True,
    prepare=_check_network,
    since="3.0.0",
)
async def update_network(call, args) -> ObjectResult:
    networkdomain = _dns_name(args["networkdomain"])
    dns = {name: _dns_server(name, args[name]) for name in ("dns1", "dns2")}
    if args["guestvmcidr"]:
        raise ApiError(431, "changing a network's guest CIDR is not supported yet (guestvmcidr)")
    async with call.server.db.sessions() as session:
        network = await _visible_network(session, call, args["id"])
        if args["networkofferingid"]:
            offering = await session.get(NetworkOffering, network.network_offering_id)
            if offering.uuid != args["networkofferingid"]:
                raise ApiError(
                    431, "changing a network's offering is not supported yet (networkofferingid)"
                )
        if args["name"]:
            network.name = args["name"]
        if args["displaytext"]:
            network.display_text = args["displaytext"]
        if networkdomain:
            network.network_domain = networkdomain
        for name, value in dns.items():
            if value is not None:
                setattr(network, name, value)
        await session.commit()
        [answer] = await _answers(session, [network])
        await call.server.events.record(
            call, "NETWORK.UPDATE", f"updated network {network.name}", network
        )
        return ObjectResult("network", answer)


@command(
    "deleteNetwork",
    description="Deletes a network",
    params=[
        Param("id", "uuid", required=True, resource="network"),
        Param("forced", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    instance_type="Network",
    resumable=True,
    prepare=_check_network,
    since="3.0.0",
)
async def delete_network(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        network = await _visible_network(session, call, args["id"])
        users = await session.scalar(
            select(VmInstance.host_name).join(Nic, Nic.vm_id == VmInstance.id).where(
                Nic.network_id == network.id, Nic.live(), VmInstance.live(),
                VmInstance.type == "User"))
        if users:
            raise ApiError(431, f"network {network.name} still has instances (e.g. {users}): "
                           "destroy and expunge them first")
    await orchestration.shutdown(call.server.orchestrator, network.id)
    async with call.server.db.sessions() as session:
        network = await session.get_one(Network, network.id)
        network.remove()
        await session.commit()
        await call.server.events.record(
            call, "NETWORK.DELETE", f"deleted network {network.name}", network
        )
    return PlainResult({"success": True})


@command(
    "restartNetwork",
    description="Restarts a network: pushes its routers' whole documents again; with "
    "cleanup, replaces its routers by new ones first",
    params=[
        Param("id", "uuid", required=True, resource="network"),
        Param("cleanup", "boolean", description="destroy the routers and start new ones"),
        Param("makeredundant", "boolean", description="accepted for compatibility"),
        Param("livepatch", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    instance_type="Network",
    resumable=True,
    prepare=_check_network,
    since="3.0.0",
)
async def restart_network(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        network = await _visible_network(session, call, args["id"])
    await orchestration.restart(call.server.orchestrator, network.id, bool(args["cleanup"]))
    await call.server.events.record(
        call, "NETWORK.RESTART", f"restarted network {network.name}", network
    )
    return PlainResult({"success": True})
