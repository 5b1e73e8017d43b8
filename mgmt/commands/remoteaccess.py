"""Remote access VPN and its users (the router's strongSwan).

One remote access VPN per network, on one of its public IPs: IKEv2 with
EAP-MSCHAPv2 for the account's VPN users, and IKEv1 XAuth with the VPN's
preshared key for older clients; clients get addresses from ``iprange``
(default: the account's ``remote.access.vpn.client.iprange``) and the
network's gateway as DNS server. The router opens UDP 500 and 4500 on the
address itself, so ``openfirewall`` records nothing.

VPN users belong to an account and are served by every remote access VPN of
that account (as in CloudStack): adding or removing one pushes each of those
networks, and strongSwan's diff leaves the other users' sessions alone.

The preshared key and the users' passwords are sealed in the database
(mgmt.db.sealing). No answer shows a password; the preshared key, which the
server makes, is in createRemoteAccessVpn's answer only (unlike CloudStack,
listRemoteAccessVpns does not show it).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string

from sqlalchemy import func, select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import new_id, not_found, of_uuid
from mgmt.commands.ownership import (
    apply_to_networks,
    check_owner,
    owner_fields,
    owner_of,
    owner_params,
    recorded_answer,
    revoked,
)
from mgmt.commands.rulebase import ip_network, visible_ip
from mgmt.commands.scope import scoped_page
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import RemoteAccessVpn, VpnUser
from mgmt.db.sealing import RA_PSK, VPN_PASSWORD
from mgmt.db.settings import get_setting
from mgmt.db.tenancy import owned_by
from mgmt.orchestration import sync

#: As the router's document takes them (appliances/router/sections/vpn.py).
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
PASSWORD = re.compile(r"^[!#-&(-\[\]-~]{6,128}$")
PSK_ALPHABET = string.ascii_letters + string.digits
PSK_LENGTH = 24
MAX_POOL = 65_536
BUSY = 536


def ip_range(text: str, guest_cidr: str) -> tuple[str, str]:
    """``start-end`` checked: IPv4, ordered, at most MAX_POOL addresses, outside the
    guest network."""
    start_text, sep, end_text = text.partition("-")
    try:
        start = ipaddress.IPv4Address(start_text.strip())
        end = ipaddress.IPv4Address((end_text if sep else start_text).strip())
    except ValueError:
        raise param_error(f"iprange {text[:60]!r} is not like 10.1.2.1-10.1.2.8") from None
    if end < start:
        raise param_error(f"iprange {text}: {end} is before {start}")
    if int(end) - int(start) >= MAX_POOL:
        raise param_error(f"iprange {text} has more than {MAX_POOL} addresses")
    guest = ipaddress.IPv4Network(guest_cidr)
    if any(a in guest for a in (start, end)) or (
        start < guest.network_address and end > guest.broadcast_address
    ):
        raise param_error(f"iprange {text} overlaps the guest network {guest}")
    return str(start), str(end)


def new_psk() -> str:
    return "".join(secrets.choice(PSK_ALPHABET) for _ in range(PSK_LENGTH))


async def vpn_answer(session, vpn: RemoteAccessVpn, psk: str | None = None) -> dict:
    """The VPN as answers show it; ``psk`` only in the answer that created it."""
    ip = await session.get_one(PublicIp, vpn.ip_address_id)
    network = await session.get_one(Network, vpn.network_id)
    answer = {
        "id": vpn.uuid,
        "publicipid": ip.uuid,
        "publicip": ip.address,
        "iprange": vpn.ip_range,
        "presharedkey": psk,
        "networkid": network.uuid,
        "state": vpn.state,
        "fordisplay": True,
        **await owner_fields(session, vpn.account_id, vpn.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


async def _check_ip(call, args) -> dict:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["publicipid"])
        return {"jobinstanceid": ip.uuid}


@command(
    "createRemoteAccessVpn",
    description="Creates a remote access VPN on a public IP address of an isolated network "
    "(IKEv2 EAP-MSCHAPv2 for VPN users; IKEv1 XAuth with the preshared key)",
    params=[
        Param("publicipid", "uuid", required=True, resource="ipaddress"),
        Param(
            "iprange",
            description="client addresses, e.g. 10.1.2.1-10.1.2.8 (default: "
            "the setting remote.access.vpn.client.iprange)",
        ),
        Param(
            "openfirewall",
            "boolean",
            description="accepted for compatibility: the router opens UDP 500 and 4500 itself",
        ),
        Param(
            "account", description="accepted for compatibility (the address's owner owns the VPN)"
        ),
        Param("domainid", "uuid", description="accepted for compatibility"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="remoteaccessvpn",
    instance_type="RemoteAccessVpn",
    prepare=_check_ip,
    since="2.2.0",
    sealed_fields=("presharedkey",),
)
async def create_remote_access_vpn(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        ip = await visible_ip(session, call, args["publicipid"])
        network = await ip_network(session, ip)
        existing = await session.scalar(
            select(RemoteAccessVpn).where(
                RemoteAccessVpn.network_id == network.id, RemoteAccessVpn.live()
            )
        )
        if existing is not None:
            other = await session.get_one(PublicIp, existing.ip_address_id)
            raise param_error(
                f"network {network.name} has a remote access VPN already (on {other.address})"
            )
        text = args["iprange"] or str(
            await get_setting(
                session,
                "remote.access.vpn.client.iprange",
                {"account": network.account_id, "domain": network.domain_id},
            )
        )
        start, end = ip_range(text, network.cidr)
        psk = new_psk()
        vpn = RemoteAccessVpn(
            **new_id(args),
            network_id=network.id,
            ip_address_id=ip.id,
            account_id=network.account_id,
            domain_id=network.domain_id,
            ip_range=f"{start}-{end}",
            preshared_key=call.server.orchestrator.sealer.seal(psk, RA_PSK),
            state="Added",
        )
        session.add(vpn)
        await session.commit()
        vpn_id, network_id = vpn.id, network.id
    await sync.apply_change(call.server.orchestrator, network_id, [("ravpn", vpn_id)])
    return await recorded_answer(
        call,
        RemoteAccessVpn,
        vpn_id,
        "VPN.REMOTE.ACCESS.CREATE",
        lambda _: f"remote access VPN on {ip.address}",
        "remoteaccessvpn",
        lambda session, vpn: vpn_answer(session, vpn, psk),
    )


async def _visible_vpn(session, call, ip_uuid: str) -> RemoteAccessVpn:
    vpn = await session.scalar(
        owned_by(
            select(RemoteAccessVpn)
            .join(PublicIp, PublicIp.id == RemoteAccessVpn.ip_address_id)
            .where(PublicIp.uuid == ip_uuid, RemoteAccessVpn.live()),
            RemoteAccessVpn,
            call.caller,
            with_projects=True,
        )
    )
    if vpn is None:
        raise not_found("remote access VPN on public IP", ip_uuid)
    return vpn


async def _check_vpn(call, args) -> dict:
    async with call.server.db.sessions() as session:
        vpn = await _visible_vpn(session, call, args["publicipid"])
        return {"jobinstanceid": vpn.uuid}


@command(
    "deleteRemoteAccessVpn",
    description="Deletes the remote access VPN of a public IP address (connected clients "
    "are disconnected)",
    params=[Param("publicipid", "uuid", required=True, resource="ipaddress")],
    is_async=True,
    instance_type="RemoteAccessVpn",
    prepare=_check_vpn,
    since="2.2.0",
)
async def delete_remote_access_vpn(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        vpn = await _visible_vpn(session, call, args["publicipid"])
        vpn.state = "Revoke"
        vpn_id, network_id = vpn.id, vpn.network_id
        await session.commit()
    return await revoked(
        call,
        [network_id],
        ("ravpn", vpn_id),
        "VPN.REMOTE.ACCESS.DESTROY",
        "deleted a remote access VPN",
        vpn,
    )


@command(
    "listRemoteAccessVpns",
    description="Lists remote access VPNs",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="remoteaccessvpn"),
        Param("publicipid", "uuid"),
        Param("networkid", "uuid"),
        Param("fordisplay", "boolean", description="accepted for compatibility"),
    ],
    list_key="remoteaccessvpn",
    since="2.2.0",
)
async def list_remote_access_vpns(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        vpns, total = await scoped_page(
            session,
            call,
            args,
            RemoteAccessVpn,
            publicipid=lambda uuid: of_uuid(RemoteAccessVpn.ip_address_id, PublicIp, uuid),
            networkid=lambda uuid: of_uuid(RemoteAccessVpn.network_id, Network, uuid),
        )
        return ListResult("remoteaccessvpn", [await vpn_answer(session, v) for v in vpns], total)


# -- users --------------------------------------------------------------------------------


async def vpn_networks(session, account_id: int) -> list[int]:
    """Networks of the account's remote access VPNs: those a user change goes to."""
    return list(
        (
            await session.scalars(
                select(RemoteAccessVpn.network_id).where(
                    RemoteAccessVpn.account_id == account_id,
                    RemoteAccessVpn.live(),
                    RemoteAccessVpn.state != "Revoke",
                )
            )
        ).all()
    )


async def user_answer(session, user: VpnUser) -> dict:
    answer = {
        "id": user.uuid,
        "username": user.username,
        "state": user.state,
        **await owner_fields(session, user.account_id, user.domain_id),
    }
    return {k: v for k, v in answer.items() if v is not None}


@command(
    "addVpnUser",
    description="Adds a VPN user to an account: every remote access VPN of the account accepts it",
    params=[
        Param("username", required=True, length=64),
        Param("password", required=True, length=128, secret=True),
        *owner_params(),
    ],
    is_async=True,
    creates=True,
    response="vpnuser",
    instance_type="VpnUser",
    prepare=check_owner,
    since="2.2.0",
)
async def add_vpn_user(call, args) -> ObjectResult:
    if not USERNAME.match(args["username"]):
        raise param_error(
            "username: 1 to 64 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit"
        )
    if not PASSWORD.match(args["password"]):
        raise param_error(
            "password: 6 to 128 printable ASCII characters without spaces, quotes or backslashes"
        )
    owner = await owner_of(call, args)
    async with call.server.db.sessions() as session:
        taken = await session.scalar(
            select(VpnUser.id).where(
                VpnUser.account_id == owner.id, VpnUser.username == args["username"], VpnUser.live()
            )
        )
        if taken:
            raise param_error(f"VPN user {args['username']} exists already in account {owner.name}")
        limit = int(
            await get_setting(
                session,
                "remote.access.vpn.user.limit",
                {"account": owner.id, "domain": owner.domain_id},
            )
        )
        count = await session.scalar(
            select(func.count())
            .select_from(VpnUser)
            .where(VpnUser.account_id == owner.id, VpnUser.live())
        )
        if count >= limit:
            raise ApiError(
                532,
                f"account {owner.name} has {count} VPN users: the limit "
                f"(remote.access.vpn.user.limit) is {limit}",
            )
        user = VpnUser(
            **new_id(args),
            account_id=owner.id,
            domain_id=owner.domain_id,
            username=args["username"],
            password=call.server.orchestrator.sealer.seal(args["password"], VPN_PASSWORD),
            state="Add",
        )
        session.add(user)
        await session.commit()
        user_id = user.id
        networks = await vpn_networks(session, owner.id)
    await apply_to_networks(call.server.orchestrator, networks, [("vpnuser", user_id)])
    async with call.server.db.sessions() as session:
        user = await session.get(VpnUser, user_id)
        if user is None or user.removed is not None:
            raise ApiError(530, f"VPN user {args['username']} could not be added")
        await call.server.events.record(
            call, "VPN.USER.ADD", f"added VPN user {user.username}", user
        )
        return ObjectResult("vpnuser", await user_answer(session, user))


@command(
    "removeVpnUser",
    description="Removes a VPN user (its sessions end; other users' stay)",
    params=[Param("username", required=True, length=64), *owner_params()],
    is_async=True,
    instance_type="VpnUser",
    prepare=check_owner,
    since="2.2.0",
)
async def remove_vpn_user(call, args) -> PlainResult:
    owner = await owner_of(call, args)
    async with call.server.db.sessions() as session:
        user = await session.scalar(
            select(VpnUser).where(
                VpnUser.account_id == owner.id,
                VpnUser.username == args["username"],
                VpnUser.live(),
                VpnUser.state != "Revoke",
            )
        )
        if user is None:
            raise param_error(f"Unable to find VPN user {args['username']} in account {owner.name}")
        user.state = "Revoke"
        user_id = user.id
        await session.commit()
        networks = await vpn_networks(session, owner.id)
    return await revoked(
        call,
        networks,
        ("vpnuser", user_id),
        "VPN.USER.REMOVE",
        f"removed VPN user {args['username']}",
        user,
    )


@command(
    "listVpnUsers",
    description="Lists VPN users",
    params=[*PAGING, *SCOPE, Param("id", "uuid", resource="vpnuser"), Param("username")],
    list_key="vpnuser",
    since="2.2.0",
)
async def list_vpn_users(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        users, total = await scoped_page(
            session,
            call,
            args,
            VpnUser,
            username=lambda name: VpnUser.username == name,
            keyword=VpnUser.username.contains,
        )
        return ListResult("vpnuser", [await user_answer(session, u) for u in users], total)
