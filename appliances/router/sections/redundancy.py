"""A redundant router pair (keepalived VRRP): what differs between the two routers.

Both routers get the same document; this section is each one's own part. With it,
the addresses in ``interfaces`` and ``public_ips`` become virtual addresses that
only the primary holds, and each router uses its ``own_addresses`` meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Interface, ip_address
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from appliances.common.errors import FieldError
from appliances.common.types import HostIPv4, IfName

if TYPE_CHECKING:
    from appliances.router.document import RouterDocument

#: VRRP PASS authentication carries at most 8 characters. It is written inside a
#: quoted keepalived string, so no double quote or backslash (keepalived has no
#: escapes there) and no '$' (keepalived reads it as a parameter substitution).
VrrpPassword = Annotated[str, StringConstraints(pattern=r"^[!#%-\[\]-~]{1,8}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnAddress(_Model):
    interface: IfName
    address: IPv4Interface


class Redundancy(_Model):
    vrid: int = Field(ge=1, le=255)
    priority: int = Field(
        default=100, ge=1, le=254, description="Wins the first election; nopreempt afterwards."
    )
    advert_interval_s: int = Field(default=1, ge=1, le=255)
    password: VrrpPassword
    sync_interface: IfName = Field(description="Where adverts and conntrackd travel.")
    peer_ip: HostIPv4 = Field(description="The other router's own address there (unicast).")
    own_addresses: list[OwnAddress] = Field(min_length=1, max_length=16)


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    red = doc.redundancy
    if red is None:
        return
    names = {i.name for i in doc.interfaces}
    if red.sync_interface not in names:
        yield FieldError("redundancy.sync_interface", f"{red.sync_interface} is not an interface")
    elif doc.interface("guest") is None or doc.interface("guest").name != red.sync_interface:
        # As CloudStack does: the public side's ingress filter passes only traffic to
        # public IPs, and the control network is each router's own link to its host.
        yield FieldError(
            "redundancy.sync_interface", "VRRP and conntrackd travel on the guest interface"
        )
    own: dict[str, int] = {}
    for n, item in enumerate(red.own_addresses):
        loc = f"redundancy.own_addresses.{n}"
        if item.interface not in names:
            yield FieldError(f"{loc}.interface", f"{item.interface} is not an interface")
        if item.interface in own:
            yield FieldError(
                f"{loc}.interface", f"the same interface as own_addresses.{own[item.interface]}"
            )
        own.setdefault(item.interface, n)
    if red.sync_interface in names and red.sync_interface not in own:
        yield FieldError(
            "redundancy.own_addresses",
            f"the sync interface {red.sync_interface} needs an own address",
        )
    virtual = {a.ip for i in doc.interfaces if i.role != "control" for a in i.addresses}
    virtual |= {ip_address(p.ip) for p in doc.public_ips}
    for n, item in enumerate(red.own_addresses):
        loc = f"redundancy.own_addresses.{n}.address"
        if item.address.ip in virtual:
            yield FieldError(loc, f"{item.address.ip} is a shared (virtual) address")
        iface = next((i for i in doc.interfaces if i.name == item.interface), None)
        if iface is not None and iface.role == "control":
            yield FieldError(
                f"redundancy.own_addresses.{n}.interface",
                "the control interface is never shared; it needs no own address",
            )
        if item.interface == red.sync_interface:
            peer = ip_address(red.peer_ip)
            if peer == item.address.ip:
                yield FieldError("redundancy.peer_ip", "is this router's own address")
            elif peer not in item.address.network:
                yield FieldError(
                    "redundancy.peer_ip",
                    f"{peer} is not in {item.address.network} of the sync interface",
                )
