"""Constrained scalar types shared by every appliance document.

Anything a user can set ends up in a config file or on a command line, so each
string type admits only a safe character set. Addresses are canonical dotted
quads (no leading zeros) checked by regex inside pydantic's Rust core, so a
document with tens of thousands of entries validates quickly; use
:mod:`appliances.common.addr` for arithmetic on them.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_UNICAST_FIRST = r"(22[0-3]|2[01][0-9]|1[0-9][0-9]|[1-9][0-9]?)"  # 1..223
_QUAD = rf"{_OCTET}(\.{_OCTET}){{3}}"

#: What each pattern means, for error messages (see errors.DocumentError).
PATTERN_HINTS: dict[str, str] = {}


def _pattern(regex: str, hint: str) -> str:
    PATTERN_HINTS[regex] = hint
    return regex


#: Identifiers (router id, rule id): shows up in nft comments and file names.
SafeId = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(
            r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            "an id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    ),
]

#: One DNS label, as a guest hostname (RFC 1123).
_LEASE_TIME_LIKE = re.compile(r"[0-9]+[smhdw]?", re.IGNORECASE)
_DNSMASQ_WORDS = {"ignore", "infinite"}


def _not_a_dnsmasq_word(value: str) -> str:
    # dnsmasq's dhcp-host reads these fields as a lease time or the "ignore this host"
    # keyword, so such a host would silently get no name (or no lease at all).
    if value.lower() in _DNSMASQ_WORDS or _LEASE_TIME_LIKE.fullmatch(value):
        raise ValueError(
            f"{value!r} reads as a lease time or keyword in dnsmasq; "
            "use a hostname with at least one letter that is not 'ignore' or 'infinite'"
        )
    return value


Hostname = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(
            rf"^{_LABEL}$",
            "a hostname: 1-63 letters, digits or '-', not starting or ending with '-'",
        )
    ),
    AfterValidator(_not_a_dnsmasq_word),
]

#: A DNS name made of RFC 1123 labels, at most 253 characters.
DomainName = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=_pattern(
            rf"^{_LABEL}(\.{_LABEL})*$",
            "a DNS name: dot-separated labels of letters, digits or '-' (no trailing dot)",
        ),
    ),
]

#: A Linux interface name (IFNAMSIZ is 16 with the NUL).
IfName = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(
            r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$",
            "an interface name: 1-15 letters, digits, '.', '_' or '-'",
        )
    ),
]


def _unicast_mac(value: str) -> str:
    value = value.lower()
    if int(value[:2], 16) & 1:
        raise ValueError("must be a unicast MAC address (the multicast bit is set)")
    if value == "00:00:00:00:00:00":
        raise ValueError("must not be the all-zero MAC address")
    return value


Mac = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(
            r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$", "a MAC address like 52:54:00:ab:cd:ef"
        )
    ),
    AfterValidator(_unicast_mac),
]

Port = Annotated[int, Field(ge=1, le=65535)]

#: -1 means "any", as in CloudStack's icmptype/icmpcode.
IcmpValue = Annotated[int, Field(ge=-1, le=255)]

#: Any IPv4 address, e.g. "10.1.1.1".
IPv4 = Annotated[
    str,
    StringConstraints(pattern=_pattern(rf"^{_QUAD}$", "an IPv4 address like 10.1.1.1")),
    WithJsonSchema({"type": "string", "format": "ipv4"}),
]

#: A unicast host address: first octet 1..223, so never 0.x, multicast or broadcast.
HostIPv4 = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(
            rf"^{_UNICAST_FIRST}(\.{_OCTET}){{3}}$",
            "a unicast IPv4 host address like 10.1.1.1 (first octet 1-223, no leading zeros)",
        )
    ),
    WithJsonSchema({"type": "string", "format": "ipv4", "description": "unicast host address"}),
]


@lru_cache(maxsize=65_536)
def _strict_network(value: str) -> str:
    # Host bits set ("10.0.0.1/24") is a typo worth naming, not something to fix silently.
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR form: {exc}") from None


#: A network in CIDR form with no host bits set, e.g. "10.1.1.0/24".
CidrV4 = Annotated[
    str,
    StringConstraints(
        pattern=_pattern(rf"^{_QUAD}/(3[0-2]|[12]?[0-9])$", "an IPv4 network like 10.1.1.0/24")
    ),
    AfterValidator(_strict_network),
    WithJsonSchema({"type": "string", "format": "ipv4-network"}),
]
