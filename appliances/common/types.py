"""Constrained scalar types shared by every appliance document.

Anything a user can set ends up in a config file or on a command line, so each
string type admits only a safe character set; addresses go through `ipaddress`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

#: Identifiers (router id, rule id): shows up in nft comments and file names.
SafeId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
]

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"

#: One DNS label, as a guest hostname (RFC 1123).
Hostname = Annotated[
    str,
    StringConstraints(pattern=rf"^{_LABEL}$"),
]

#: A DNS name made of RFC 1123 labels, at most 253 characters.
DomainName = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=rf"^{_LABEL}(\.{_LABEL})*$",
    ),
]

#: A Linux interface name (IFNAMSIZ is 16 with the NUL).
IfName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")]


def _unicast_mac(value: str) -> str:
    value = value.lower()
    if int(value[:2], 16) & 1:
        raise ValueError("must be a unicast MAC address (the multicast bit is set)")
    if value == "00:00:00:00:00:00":
        raise ValueError("must not be the all-zero MAC address")
    return value


Mac = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"),
    AfterValidator(_unicast_mac),
]

Port = Annotated[int, Field(ge=1, le=65535)]

#: -1 means "any", as in CloudStack's icmptype/icmpcode.
IcmpValue = Annotated[int, Field(ge=-1, le=255)]


def _host_address(value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    if value.is_multicast or value.is_unspecified or value == ipaddress.IPv4Address(
        "255.255.255.255"
    ):
        raise ValueError(f"{value} is not a unicast host address")
    return value


HostIPv4 = Annotated[ipaddress.IPv4Address, AfterValidator(_host_address)]


def _strict_network(value: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    # ipaddress with strict=True refuses host bits ("10.0.0.1/24"): a typo we name.
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR form: {exc}") from None


CidrV4 = Annotated[ipaddress.IPv4Network, AfterValidator(_strict_network)]
