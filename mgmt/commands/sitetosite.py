"""Site-to-site VPN: customer gateways, VPN gateways and the connections between them.

A customer gateway is the other end (its public address, CIDRs, preshared key
and IKE/ESP policies); a VPN gateway is a network's end (its source-NAT
address); a connection joins the two and becomes one peer in the router's
document. CloudStack offers VPN gateways on VPCs only; Skiff has no VPCs yet
and takes ``networkid`` (an isolated network) instead of ``vpcid``.

Everything the router would refuse is refused here first with 431: policies
are parsed and judged by the router's own module (weak algorithms such as
3des, md5 and modp1024 are refused), lifetimes are the router's bounds, and a
connection's peer CIDRs may not overlap the network or another peer of the
same gateway. A connection's state is the router's view (Connected,
Disconnected or Error), read again whenever connections are listed
(mgmt.orchestration.vpnstate).

A customer gateway's preshared key is sealed in the database (mgmt.db.sealing)
and never in an answer (CloudStack shows it as ``ipsecpsk``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sqlalchemy import func, select

from appliances.router.vpn_policy import PolicyError, parse
from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import check_visible, date, new_id, of_uuid, visible_row
from mgmt.commands.ownership import (
    check_owner,
    owner_account,
    owner_fields,
    owner_params,
    recorded_answer,
    revoked,
)
from mgmt.commands.rulebase import cidr_list, visible_network
from mgmt.commands.scope import scoped_page
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import CustomerGateway, VpnConnection, VpnGateway
from mgmt.db.sealing import S2S_PSK
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration import networks, sync, vpnstate

IKE_VERSIONS = ("ike", "ikev1", "ikev2")
#: The router's bounds (appliances/router/sections/vpn.py SiteToSite).
IKE_LIFETIME = (300, 86_400 * 7)
ESP_LIFETIME = (300, 86_400)
PSK = re.compile(r"^[!#-&(-\[\]-~]{8,256}$")
IN_USE = 536


# -- checks (pure) ------------------------------------------------------------------------


def policy(name: str, value: str, kind: str) -> str:
    """A CloudStack policy string the router accepts (no weak algorithms)."""
    try:
        proposals = parse(value, kind=kind)
    except PolicyError as exc:
        raise param_error(f"{name}: {exc}") from None
    weak = list(dict.fromkeys(w for p in proposals for w in p.weaknesses()))
    if weak:
        raise param_error(
            f"{name} {value!r} uses weak algorithms ({'; '.join(weak)}); use "
            "e.g. aes128-sha256;modp2048"
        )
    return value.strip().lower()


def gateway_address(value: str) -> str:
    try:
        ip = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise param_error(f"gateway {value[:60]!r} is not an IPv4 address") from None
    if (
        ip.is_unspecified
        or ip.is_loopback
        or ip.is_multicast
        or ip.is_link_local
        or ip == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise param_error(f"gateway {ip} cannot be a VPN peer")
    return str(ip)


def lifetime(name: str, value: int | None, default: int, bounds: tuple[int, int]) -> int:
    value = default if value is None else value
    if not bounds[0] <= value <= bounds[1]:
        raise param_error(f"{name} {value} is outside {bounds[0]}..{bounds[1]} seconds")
    return value


def gateway_columns(
    args: dict[str, Any], subnets_limit: int, *, current: CustomerGateway | None = None
) -> dict[str, Any]:
    """Columns of a customer gateway from create/update parameters (update: only the
    given ones)."""
    out: dict[str, Any] = {}
    if args.get("gateway") is not None:
        out["gateway"] = gateway_address(args["gateway"])
    if args.get("cidrlist") is not None:
        cidrs = cidr_list(args["cidrlist"])
        if not 1 <= len(cidrs) <= subnets_limit:
            raise param_error(
                f"cidrlist: give 1 to {subnets_limit} CIDRs "
                "(site2site.vpn.customergateway.subnets.limit)"
            )
        out["cidr_list"] = ",".join(cidrs)
    if args.get("ipsecpsk") is not None:
        if not PSK.match(args["ipsecpsk"]):
            raise param_error(
                "ipsecpsk: 8 to 256 printable ASCII characters without spaces, "
                "quotes or backslashes"
            )
        out["ipsec_psk"] = args["ipsecpsk"]
    if args.get("ikepolicy") is not None:
        out["ike_policy"] = policy("ikepolicy", args["ikepolicy"], "ike")
    if args.get("esppolicy") is not None:
        out["esp_policy"] = policy("esppolicy", args["esppolicy"], "esp")
    if current is None or args.get("ikelifetime") is not None:
        out["ike_lifetime"] = lifetime("ikelifetime", args.get("ikelifetime"), 86_400, IKE_LIFETIME)
    if current is None or args.get("esplifetime") is not None:
        out["esp_lifetime"] = lifetime("esplifetime", args.get("esplifetime"), 3_600, ESP_LIFETIME)
    for param, column in (
        ("dpd", "dpd"),
        ("forceencap", "force_encap"),
        ("splitconnections", "split_connections"),
        ("ikeversion", "ike_version"),
        ("name", "name"),
    ):
        if args.get(param) is not None:
            out[column] = args[param]
    return out


def overlaps(a: str, b: str) -> bool:
    nets = [[ipaddress.IPv4Network(c) for c in text.split(",") if c] for text in (a, b)]
    return any(x.overlaps(y) for x in nets[0] for y in nets[1])


async def check_connection(
    session, gateway: VpnGateway, customer: CustomerGateway, *, ignore: int | None = None
) -> None:
    """CloudStack's checks of a connection: the peer's CIDRs are not the network's,
    and no other peer of the gateway has its address or overlapping CIDRs."""
    network = await session.get_one(Network, gateway.network_id)
    if overlaps(customer.cidr_list, network.cidr):
        raise param_error(
            f"customer gateway {customer.name}'s cidrlist {customer.cidr_list} "
            f"overlaps network {network.name}'s {network.cidr}"
        )
    others = (
        await session.execute(
            select(VpnConnection, CustomerGateway)
            .join(CustomerGateway, CustomerGateway.id == VpnConnection.customer_gateway_id)
            .where(
                VpnConnection.vpn_gateway_id == gateway.id,
                VpnConnection.live(),
                VpnConnection.state != "Revoke",
            )
        )
    ).all()
    for conn, other in others:
        if conn.id == ignore or other.id == customer.id:
            continue
        if other.gateway == customer.gateway:
            raise param_error(
                f"VPN gateway of {network.name} has a connection to "
                f"{customer.gateway} already (customer gateway {other.name})"
            )
        if overlaps(other.cidr_list, customer.cidr_list):
            raise param_error(
                f"cidrlist {customer.cidr_list} overlaps {other.cidr_list} of "
                f"customer gateway {other.name}, also connected to "
                f"{network.name}'s VPN gateway"
            )


# -- answers ------------------------------------------------------------------------------


async def customer_answer(session, gw: CustomerGateway) -> dict:
    answer = {
        "id": gw.uuid,
        "name": gw.name,
        "gateway": gw.gateway,
        "cidrlist": gw.cidr_list,
        "ikepolicy": gw.ike_policy,
        "esppolicy": gw.esp_policy,
        "ikelifetime": gw.ike_lifetime,
        "esplifetime": gw.esp_lifetime,
        "dpd": gw.dpd,
        "forceencap": gw.force_encap,
        "ikeversion": gw.ike_version,
        "splitconnections": gw.split_connections,
        **await owner_fields(session, gw.account_id, gw.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


async def gateway_answer(session, gw: VpnGateway) -> dict:
    ip = await session.get_one(PublicIp, gw.ip_address_id)
    network = await session.get_one(Network, gw.network_id)
    answer = {
        "id": gw.uuid,
        "publicip": ip.address,
        "networkid": network.uuid,
        "networkname": network.name,
        "fordisplay": True,
        **await owner_fields(session, gw.account_id, gw.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


async def connection_answer(session, conn: VpnConnection) -> dict:
    gw = await session.get_one(VpnGateway, conn.vpn_gateway_id)
    customer = await session.get_one(CustomerGateway, conn.customer_gateway_id)
    ip = await session.get_one(PublicIp, gw.ip_address_id)
    network = await session.get_one(Network, gw.network_id)
    answer = {
        "id": conn.uuid,
        "s2svpngatewayid": gw.uuid,
        "publicip": ip.address,
        "s2scustomergatewayid": customer.uuid,
        "gateway": customer.gateway,
        "cidrlist": customer.cidr_list,
        "ikepolicy": customer.ike_policy,
        "esppolicy": customer.esp_policy,
        "ikelifetime": customer.ike_lifetime,
        "esplifetime": customer.esp_lifetime,
        "dpd": customer.dpd,
        "forceencap": customer.force_encap,
        "ikeversion": customer.ike_version,
        "splitconnections": customer.split_connections,
        "passive": conn.passive,
        "state": conn.state,
        "networkid": network.uuid,
        "created": date(conn.created),
        "fordisplay": True,
        **await owner_fields(session, conn.account_id, conn.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


# -- customer gateways --------------------------------------------------------------------


def _gateway_params(required: bool) -> list[Param]:
    return [
        Param("gateway", required=required, description="the peer's public IPv4 address"),
        Param("cidrlist", "list", required=required, description="the peer's CIDRs"),
        Param("ipsecpsk", required=required, description="the preshared key", secret=True),
        Param("ikepolicy", required=required, description="e.g. aes128-sha256;modp2048"),
        Param(
            "esppolicy",
            required=required,
            description="e.g. aes128-sha256 or aes128-sha256;modp2048 (PFS group)",
        ),
        Param("name"),
        Param("ikelifetime", "long", description="seconds (default 86400)"),
        Param("esplifetime", "long", description="seconds (default 3600)"),
        Param("dpd", "boolean", description="dead peer detection (default false)"),
        Param("forceencap", "boolean", description="force UDP encapsulation"),
        Param("ikeversion", choices=IKE_VERSIONS, description="ike (either), ikev1 or ikev2"),
        Param("splitconnections", "boolean", description="one SA per CIDR pair"),
    ]


def _sealed(call, columns: dict[str, Any]) -> dict[str, Any]:
    """``columns`` with the preshared key sealed, as the database keeps it."""
    if "ipsec_psk" in columns:
        columns["ipsec_psk"] = call.server.orchestrator.sealer.seal(columns["ipsec_psk"], S2S_PSK)
    return columns


async def _subnets_limit(session) -> int:
    return int(await get_setting(session, "site2site.vpn.customergateway.subnets.limit"))


@command(
    "createVpnCustomerGateway",
    description="Creates a customer gateway: the other end of site-to-site VPN connections",
    params=[*_gateway_params(True), *owner_params()],
    is_async=True,
    response="vpncustomergateway",
    instance_type="VpnCustomerGateway",
    prepare=check_owner,
    since="4.0.0",
)
async def create_vpn_customer_gateway(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        owner = await owner_account(
            session, call, args["account"], args["domainid"], args["projectid"]
        )
        columns = _sealed(call, gateway_columns(args, await _subnets_limit(session)))
        columns.setdefault("name", columns["gateway"])
        for column, what in (("name", "name"), ("gateway", "gateway address")):
            taken = await session.scalar(
                select(CustomerGateway.uuid).where(
                    CustomerGateway.account_id == owner.id,
                    CustomerGateway.live(),
                    getattr(CustomerGateway, column) == columns[column],
                )
            )
            if taken:
                raise param_error(
                    f"account {owner.name} has a customer gateway with "
                    f"{what} {columns[column]} already ({taken})"
                )
        gw = CustomerGateway(
            **new_id(args), account_id=owner.id, domain_id=owner.domain_id, **columns
        )
        session.add(gw)
        await session.commit()
        await call.server.events.record(
            call, "VPN.S2S.CUSTOMER.GATEWAY.CREATE", f"customer gateway {gw.name}", gw
        )
        return ObjectResult("vpncustomergateway", await customer_answer(session, gw))


async def _connections_of(session, **where) -> list[VpnConnection]:
    query = select(VpnConnection).where(VpnConnection.live())
    for column, value in where.items():
        query = query.where(getattr(VpnConnection, column) == value)
    return list((await session.scalars(query)).all())


async def _gateway_networks(session, conns: list[VpnConnection]) -> list[int]:
    ids = {c.vpn_gateway_id for c in conns}
    if not ids:
        return []
    return list(
        (await session.scalars(select(VpnGateway.network_id).where(VpnGateway.id.in_(ids)))).all()
    )


async def _delete_unconnected(
    call, args, model, what: str, link: str, in_use: str, event: str, description: str
) -> PlainResult:
    """Delete the gateway ``args["id"]`` unless a connection uses it (``link``: the
    connection's column naming it). ``in_use`` and ``description`` are formatted with
    the gateway as ``row``."""
    async with call.server.db.sessions() as session:
        row = await visible_row(session, call, model, args["id"], what)
        if await _connections_of(session, **{link: row.id}):
            raise ApiError(IN_USE, in_use.format(row=row))
        row.removed = utcnow()
        await session.commit()
    await call.server.events.record(call, event, description.format(row=row), row)
    return PlainResult({"success": True})


def _of_network(uuid: str):
    """VPN gateways of the network ``uuid`` (``networkid`` of the lists)."""
    return of_uuid(VpnGateway.network_id, Network, uuid)


@command(
    "updateVpnCustomerGateway",
    description="Changes a customer gateway; its connections are re-applied (others keep "
    "their tunnels)",
    params=[
        Param("id", "uuid", required=True, resource="vpncustomergateway"),
        *_gateway_params(False),
        *owner_params(),
    ],
    is_async=True,
    response="vpncustomergateway",
    instance_type="VpnCustomerGateway",
    prepare=check_visible(CustomerGateway, "VPN customer gateway"),
    since="4.0.0",
)
async def update_vpn_customer_gateway(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        gw = await visible_row(session, call, CustomerGateway, args["id"], "VPN customer gateway")
        columns = _sealed(call, gateway_columns(args, await _subnets_limit(session), current=gw))
        before = {column: getattr(gw, column) for column in columns}
        for column, value in columns.items():
            setattr(gw, column, value)
        conns = await _connections_of(session, customer_gateway_id=gw.id)
        for conn in conns:
            vpn_gateway = await session.get_one(VpnGateway, conn.vpn_gateway_id)
            await check_connection(session, vpn_gateway, gw, ignore=conn.id)
        network_ids = await _gateway_networks(session, conns)
        gw_id = gw.id
        await session.commit()
    try:
        for network_id in sorted(set(network_ids)):
            await sync.apply_network(call.server.orchestrator, network_id)
    except (sync.RouterRefused, sync.RouterUnreachable) as exc:
        async with call.server.db.sessions() as session:
            gw = await session.get_one(CustomerGateway, gw_id)
            for column, value in before.items():
                setattr(gw, column, value)
            await session.commit()
        raise ApiError(sync.ROUTER_ERROR, str(exc)) from exc
    await vpnstate.refresh(call.server.orchestrator, network_ids)
    return await recorded_answer(
        call,
        CustomerGateway,
        gw_id,
        "VPN.S2S.CUSTOMER.GATEWAY.UPDATE",
        lambda gw: f"customer gateway {gw.name}",
        "vpncustomergateway",
        customer_answer,
    )


@command(
    "deleteVpnCustomerGateway",
    description="Deletes a customer gateway that no connection uses",
    params=[Param("id", "uuid", required=True, resource="vpncustomergateway")],
    is_async=True,
    instance_type="VpnCustomerGateway",
    prepare=check_visible(CustomerGateway, "VPN customer gateway"),
    since="4.0.0",
)
async def delete_vpn_customer_gateway(call, args) -> PlainResult:
    return await _delete_unconnected(
        call,
        args,
        CustomerGateway,
        "VPN customer gateway",
        "customer_gateway_id",
        "customer gateway {row.name} has VPN connections: delete them first",
        "VPN.S2S.CUSTOMER.GATEWAY.DELETE",
        "customer gateway {row.name}",
    )


@command(
    "listVpnCustomerGateways",
    description="Lists customer gateways",
    params=[*PAGING, *SCOPE, Param("id", "uuid", resource="vpncustomergateway")],
    list_key="vpncustomergateway",
    since="4.0.0",
)
async def list_vpn_customer_gateways(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        rows, total = await scoped_page(
            session, call, args, CustomerGateway, keyword=CustomerGateway.name.contains
        )
        return ListResult(
            "vpncustomergateway", [await customer_answer(session, r) for r in rows], total
        )


# -- VPN gateways -------------------------------------------------------------------------


async def _check_gateway_network(call, args) -> dict:
    if args["vpcid"]:
        raise ApiError(
            431, "VPCs are not supported yet (vpcid): give networkid, an isolated network"
        )
    if not args["networkid"]:
        raise param_error("networkid is required (VPCs are not supported yet)")
    async with call.server.db.sessions() as session:
        network = await visible_network(session, call, args["networkid"])
        return {"jobinstanceid": network.uuid}


@command(
    "createVpnGateway",
    description="Creates a network's VPN gateway on its source NAT address (Skiff: "
    "networkid of an isolated network; VPCs are not supported yet)",
    params=[
        Param("networkid", "uuid", resource="network", description="the isolated network"),
        Param("vpcid", "uuid", description="not supported yet"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    response="vpngateway",
    instance_type="VpnGateway",
    prepare=_check_gateway_network,
    since="4.0.0",
)
async def create_vpn_gateway(call, args) -> ObjectResult:
    await _check_gateway_network(call, args)
    orch = call.server.orchestrator
    async with call.server.db.sessions() as session:
        network = await visible_network(session, call, args["networkid"])
        existing = await session.scalar(
            select(VpnGateway.uuid).where(VpnGateway.network_id == network.id, VpnGateway.live())
        )
        if existing:
            raise param_error(f"network {network.name} has a VPN gateway already ({existing})")
    await networks.implement(orch, network.id)
    snat = await networks.source_nat_ip(orch, network)
    async with call.server.db.sessions() as session:
        gw = VpnGateway(
            network_id=network.id,
            ip_address_id=snat.id,
            account_id=network.account_id,
            domain_id=network.domain_id,
        )
        session.add(gw)
        await session.commit()
        await call.server.events.record(
            call,
            "VPN.S2S.VPN.GATEWAY.CREATE",
            f"VPN gateway of {network.name} on {snat.address}",
            gw,
        )
        return ObjectResult("vpngateway", await gateway_answer(session, gw))


@command(
    "deleteVpnGateway",
    description="Deletes a VPN gateway that has no connections",
    params=[Param("id", "uuid", required=True, resource="vpngateway")],
    is_async=True,
    instance_type="VpnGateway",
    prepare=check_visible(VpnGateway, "VPN gateway"),
    since="4.0.0",
)
async def delete_vpn_gateway(call, args) -> PlainResult:
    return await _delete_unconnected(
        call,
        args,
        VpnGateway,
        "VPN gateway",
        "vpn_gateway_id",
        "the VPN gateway has connections: delete them first",
        "VPN.S2S.VPN.GATEWAY.DELETE",
        "deleted a VPN gateway",
    )


@command(
    "listVpnGateways",
    description="Lists VPN gateways",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="vpngateway"),
        Param("networkid", "uuid"),
        Param("vpcid", "uuid", description="no VPCs yet"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="vpngateway",
    since="4.0.0",
)
async def list_vpn_gateways(call, args) -> ListResult:
    if args["vpcid"]:
        return ListResult("vpngateway", [])
    async with call.server.db.sessions() as session:
        rows, total = await scoped_page(session, call, args, VpnGateway, networkid=_of_network)
        return ListResult("vpngateway", [await gateway_answer(session, r) for r in rows], total)


# -- connections --------------------------------------------------------------------------


async def _check_connection_args(call, args) -> dict:
    async with call.server.db.sessions() as session:
        gw = await visible_row(session, call, VpnGateway, args["s2svpngatewayid"], "VPN gateway")
        await visible_row(
            session, call, CustomerGateway, args["s2scustomergatewayid"], "VPN customer gateway"
        )
        return {"jobinstanceid": gw.uuid}


@command(
    "createVpnConnection",
    description="Connects a network's VPN gateway to a customer gateway (the router "
    "initiates the tunnel unless passive)",
    params=[
        Param("s2scustomergatewayid", "uuid", required=True, resource="vpncustomergateway"),
        Param("s2svpngatewayid", "uuid", required=True, resource="vpngateway"),
        Param("passive", "boolean", description="only answer, never initiate (default false)"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="vpnconnection",
    instance_type="VpnConnection",
    prepare=_check_connection_args,
    since="4.0.0",
)
async def create_vpn_connection(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        gw = await visible_row(session, call, VpnGateway, args["s2svpngatewayid"], "VPN gateway")
        customer = await visible_row(
            session, call, CustomerGateway, args["s2scustomergatewayid"], "VPN customer gateway"
        )
        if customer.account_id != gw.account_id:
            raise param_error(
                "the customer gateway and the VPN gateway belong to different accounts"
            )
        if await _connections_of(session, vpn_gateway_id=gw.id, customer_gateway_id=customer.id):
            raise param_error(
                f"the VPN gateway is connected to customer gateway {customer.name} already"
            )
        limit = int(await get_setting(session, "site2site.vpn.vpngateway.connection.limit"))
        count = await session.scalar(
            select(func.count())
            .select_from(VpnConnection)
            .where(VpnConnection.vpn_gateway_id == gw.id, VpnConnection.live())
        )
        if count >= limit:
            raise ApiError(
                532,
                f"the VPN gateway has {count} connections: the limit "
                f"(site2site.vpn.vpngateway.connection.limit) is {limit}",
            )
        await check_connection(session, gw, customer)
        conn = VpnConnection(
            **new_id(args),
            vpn_gateway_id=gw.id,
            customer_gateway_id=customer.id,
            account_id=gw.account_id,
            domain_id=gw.domain_id,
            passive=bool(args["passive"]),
            state="Pending",
        )
        session.add(conn)
        await session.commit()
        conn_id, network_id = conn.id, gw.network_id
    await sync.apply_change(call.server.orchestrator, network_id, [("s2s", conn_id)])
    await vpnstate.refresh(call.server.orchestrator, [network_id])
    return await recorded_answer(
        call,
        VpnConnection,
        conn_id,
        "VPN.S2S.CONNECTION.CREATE",
        lambda _: f"VPN connection to {customer.gateway}",
        "vpnconnection",
        connection_answer,
    )


@command(
    "deleteVpnConnection",
    description="Deletes a VPN connection (its tunnel goes down; others stay)",
    params=[Param("id", "uuid", required=True, resource="vpnconnection")],
    is_async=True,
    instance_type="VpnConnection",
    prepare=check_visible(VpnConnection, "VPN connection"),
    since="4.0.0",
)
async def delete_vpn_connection(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        conn = await visible_row(session, call, VpnConnection, args["id"], "VPN connection")
        gw = await session.get_one(VpnGateway, conn.vpn_gateway_id)
        conn.state = "Revoke"
        conn_id, network_id = conn.id, gw.network_id
        await session.commit()
    return await revoked(
        call,
        [network_id],
        ("s2s", conn_id),
        "VPN.S2S.CONNECTION.DELETE",
        "deleted a VPN connection",
        conn,
    )


@command(
    "resetVpnConnection",
    description="Restarts a VPN connection: the router drops it and sets it up again",
    params=[Param("id", "uuid", required=True, resource="vpnconnection")],
    is_async=True,
    response="vpnconnection",
    instance_type="VpnConnection",
    prepare=check_visible(VpnConnection, "VPN connection"),
    since="4.0.0",
)
async def reset_vpn_connection(call, args) -> ObjectResult:
    orch = call.server.orchestrator
    async with call.server.db.sessions() as session:
        conn = await visible_row(session, call, VpnConnection, args["id"], "VPN connection")
        if conn.state not in vpnstate.SETTLED:
            raise ApiError(
                IN_USE, f"the VPN connection is {conn.state}: try again when it is applied"
            )
        gw = await session.get_one(VpnGateway, conn.vpn_gateway_id)
        conn_id, network_id = conn.id, gw.network_id
        conn.state = "Reset"  # out of the document (documents.HIDDEN)
        await session.commit()
    error: Exception | None = None
    try:
        await sync.apply_network(orch, network_id)
    except (sync.RouterRefused, sync.RouterUnreachable) as exc:
        error = exc
    async with call.server.db.sessions() as session:
        conn = await session.get_one(VpnConnection, conn_id)
        conn.state = "Disconnected"  # back in the document
        await session.commit()
    try:
        await sync.apply_network(orch, network_id)
    except (sync.RouterRefused, sync.RouterUnreachable) as exc:
        error = error or exc
    if error is not None:
        async with call.server.db.sessions() as session:
            conn = await session.get_one(VpnConnection, conn_id)
            conn.state = "Error"
            await session.commit()
        raise ApiError(sync.ROUTER_ERROR, str(error)) from error
    await vpnstate.refresh(orch, [network_id])
    return await recorded_answer(
        call,
        VpnConnection,
        conn_id,
        "VPN.S2S.CONNECTION.RESET",
        lambda _: "reset a VPN connection",
        "vpnconnection",
        connection_answer,
    )


@command(
    "listVpnConnections",
    description="Lists VPN connections with their state as the routers see it (Connected, "
    "Disconnected, Error)",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="vpnconnection"),
        Param("networkid", "uuid"),
        Param("vpcid", "uuid", description="no VPCs yet"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="vpnconnection",
    since="4.0.0",
)
async def list_vpn_connections(call, args) -> ListResult:
    if args["vpcid"]:
        return ListResult("vpnconnection", [])

    def of_network(uuid: str):
        return VpnConnection.vpn_gateway_id.in_(select(VpnGateway.id).where(_of_network(uuid)))

    async with call.server.db.sessions() as session:
        rows, total = await scoped_page(session, call, args, VpnConnection, networkid=of_network)
        ids = [r.id for r in rows]
        network_ids = await _gateway_networks(session, list(rows))
    if ids:
        await vpnstate.refresh(call.server.orchestrator, network_ids)
    async with call.server.db.sessions() as session:
        rows = (
            await session.scalars(
                select(VpnConnection)
                .where(VpnConnection.id.in_(ids or [-1]))
                .order_by(VpnConnection.id)
            )
        ).all()
        return ListResult(
            "vpnconnection", [await connection_answer(session, r) for r in rows], total
        )
