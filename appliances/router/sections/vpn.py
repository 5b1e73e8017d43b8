"""Site-to-site and remote-access VPN (strongSwan), as CloudStack's VPN objects."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from appliances.common.errors import FieldError
from appliances.common.types import CidrV4, HostIPv4, SafeId
from appliances.router.vpn_policy import PolicyError, to_strongswan

if TYPE_CHECKING:
    from appliances.router.document import RouterDocument

#: A CloudStack IKE/ESP policy string: "aes128-sha1;modp1536", "aes256-sha256",
#: several proposals separated by ','. Mapped and judged in appliances.router.vpn_policy.
PolicyString = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*(;[A-Za-z0-9]+)?"
        r"(,[A-Za-z0-9]+(-[A-Za-z0-9]+)*(;[A-Za-z0-9]+)?)*$",
        max_length=256,
    ),
]
#: A preshared key: printable ASCII without quotes or backslash (it goes into VICI,
#: never a file, but the same key must also work in a peer's config file).
Secret = Annotated[str, StringConstraints(pattern=r"^[!#-&(-\[\]-~]{8,256}$")]
#: A VPN user name (CloudStack: addVpnUser username).
VpnUserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
VpnPassword = Annotated[str, StringConstraints(pattern=r"^[!#-&(-\[\]-~]{6,128}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteToSite(_Model):
    """One peer (CloudStack: a VPN connection to a customer gateway)."""

    id: SafeId
    local_gateway: HostIPv4 = Field(description="One of the router's public IPs.")
    peer_gateway: HostIPv4
    local_cidrs: list[CidrV4] = Field(min_length=1, max_length=64)
    peer_cidrs: list[CidrV4] = Field(min_length=1, max_length=64)
    ike_policy: PolicyString = "aes128-sha256;modp2048"
    esp_policy: PolicyString = "aes128-sha256;modp2048"
    allow_weak: bool = Field(default=False, description="Accept 3des, md5, modp1024 etc.")
    psk: Secret
    ike_version: Literal["ikev1", "ikev2", "ike"] = "ikev2"
    ike_lifetime_s: int = Field(default=86_400, ge=300, le=86_400 * 7)
    esp_lifetime_s: int = Field(default=3_600, ge=300, le=86_400)
    dpd: bool = True
    dpd_interval_s: int = Field(default=30, ge=1, le=3600)
    passive: bool = Field(default=False, description="Responder only: never initiate.")
    force_encap: bool = False
    split_connections: bool = Field(
        default=False,
        description="One child SA per local/peer CIDR pair (peers that "
        "cannot take several traffic selectors in one SA).",
    )


class VpnUser(_Model):
    name: VpnUserName
    password: VpnPassword


class RemoteAccess(_Model):
    """CloudStack's remote-access VPN on one public IP: IKEv2 EAP-MSCHAPv2 users,
    and the preshared key for IKEv1 XAuth clients."""

    public_ip: HostIPv4
    pool_start: HostIPv4
    pool_end: HostIPv4
    psk: Secret
    dns_servers: list[HostIPv4] = Field(default_factory=list, max_length=4)
    users: list[VpnUser] = Field(default_factory=list, max_length=4096)


class Vpn(_Model):
    site_to_site: list[SiteToSite] = Field(default_factory=list, max_length=256)
    remote_access: RemoteAccess | None = None

    @property
    def empty(self) -> bool:
        return not self.site_to_site and self.remote_access is None


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    """Gateways are the router's public IPs, ids and peers unique; users unique."""
    publics = {p.ip for p in doc.public_ips}
    ids: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for n, conn in enumerate(doc.vpn.site_to_site):
        loc = f"vpn.site_to_site.{n}"
        if conn.id in ids:
            yield FieldError(f"{loc}.id", f"the same id as vpn.site_to_site.{ids[conn.id]}")
        ids.setdefault(conn.id, n)
        pair = (conn.local_gateway, conn.peer_gateway)
        if pair in pairs:
            yield FieldError(
                f"{loc}.peer_gateway",
                f"{conn.peer_gateway} is already the peer "
                f"of vpn.site_to_site.{pairs[pair]} on {conn.local_gateway}",
            )
        pairs.setdefault(pair, n)
        if conn.local_gateway not in publics:
            yield FieldError(f"{loc}.local_gateway", f"{conn.local_gateway} is not in public_ips")
        yield from _policy_errors(loc, conn)
    ra = doc.vpn.remote_access
    if ra is not None:
        if ra.public_ip not in publics:
            yield FieldError("vpn.remote_access.public_ip", f"{ra.public_ip} is not in public_ips")
        start, end = ipaddress.IPv4Address(ra.pool_start), ipaddress.IPv4Address(ra.pool_end)
        if start > end:
            yield FieldError("vpn.remote_access.pool_end", f"{end} is before pool_start {start}")
        elif int(end) - int(start) >= MAX_POOL:
            yield FieldError(
                "vpn.remote_access.pool_end", f"the pool has more than {MAX_POOL} addresses"
            )
        guest = ipaddress.IPv4Network(doc.guest_network.cidr)
        if start in guest or end in guest:
            yield FieldError(
                "vpn.remote_access.pool_start", f"the pool overlaps the guest network {guest}"
            )
        names: dict[str, int] = {}
        for k, user in enumerate(ra.users):
            if user.name in names:
                yield FieldError(
                    f"vpn.remote_access.users.{k}.name",
                    f"the same name as users.{names[user.name]}",
                )
            names.setdefault(user.name, k)


MAX_POOL = 65_536


def _policy_errors(loc: str, conn: SiteToSite) -> Iterator[FieldError]:
    """IKE and ESP policies must map to strongSwan proposals (and be strong enough)."""
    for field_name, kind in (("ike_policy", "ike"), ("esp_policy", "esp")):
        try:
            to_strongswan(getattr(conn, field_name), kind=kind, allow_weak=conn.allow_weak)
        except PolicyError as exc:
            yield FieldError(f"{loc}.{field_name}", str(exc))
