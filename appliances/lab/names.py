"""Names and addresses of everything a lab creates, derived from the lab name alone.

Everything carries the prefix ``skf-<lab>-`` (namespaces and the few root-namespace
links), so ``down`` can find a crashed lab's leftovers without any saved state. Lab
names cannot contain ``-``, so one lab's prefix never matches another lab's names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
DEFAULT_NAME = "lab"
MAX_GUESTS = 200

#: Addressing plan (fixed; every lab has its own switch, so labs never clash).
GUEST_CIDR = ipaddress.IPv4Network("10.1.1.0/24")
GUEST_GATEWAY = ipaddress.IPv4Address("10.1.1.1")
PUBLIC_CIDR = ipaddress.IPv4Network("203.0.113.0/24")
INTERNET_IP = ipaddress.IPv4Address("203.0.113.1")
ROUTER_PUBLIC_IP = ipaddress.IPv4Address("203.0.113.10")
SPARE_PUBLIC_IPS = (ipaddress.IPv4Address("203.0.113.11"), ipaddress.IPv4Address("203.0.113.12"))
REMOTE_CLIENT_IPS = (ipaddress.IPv4Address("198.51.100.10"), ipaddress.IPv4Address("198.51.100.20"))
DOMAIN = "lab.test"
#: Names the internet's DNS server answers (all with INTERNET_IP). Those outside DOMAIN
#: also resolve through the router, whose dnsmasq is authoritative for DOMAIN.
INTERNET_DNS_NAMES = ("www.lab.test", "internet.lab.test", "www.internet.test", "internet.test")
AGENT_PORT = 8443

#: Control subnets are 169.254.N.0/24 with N in this range (169 is avoided: 169.254.169.254
#: is the metadata address on many clouds).
CONTROL_OCTETS = tuple(n for n in range(100, 200) if n != 169)

#: MACs are 52:54:00:01:<segment>:<host>; segment 01 guest, 02 public, 03 control.
ROUTER_MACS = {
    "eth0": "52:54:00:01:01:01",
    "eth1": "52:54:00:01:03:02",
    "eth2": "52:54:00:01:02:0a",
}
INTERNET_MAC = "52:54:00:01:02:01"

GUEST_NAME_RE = re.compile(r"^g([1-9][0-9]{0,2})$")


class LabNameError(ValueError):
    pass


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LabNameError(
            f"invalid lab name {name!r}: use 1-6 characters, a lowercase letter first, then "
            "lowercase letters or digits (interface names are limited to 15 characters)"
        )
    return name


@dataclass(frozen=True)
class Guest:
    """One guest instance of the lab: name gK, fixed MAC and DHCP address."""

    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_GUESTS:
            raise ValueError(f"guest index {self.index} is outside 1..{MAX_GUESTS}")

    @classmethod
    def from_name(cls, name: str) -> Guest:
        m = GUEST_NAME_RE.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a guest name (g1, g2, ...)")
        return cls(int(m.group(1)))

    @property
    def name(self) -> str:
        return f"g{self.index}"

    @property
    def mac(self) -> str:
        return f"52:54:00:01:01:{10 + self.index:02x}"

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return GUEST_CIDR.network_address + 10 + self.index


@dataclass(frozen=True)
class LabNames:
    """The names of one lab's namespaces and root-namespace links."""

    lab: str

    def __post_init__(self) -> None:
        check_name(self.lab)

    @property
    def prefix(self) -> str:
        return f"skf-{self.lab}-"

    def ns(self, role: str) -> str:
        """Namespace of a role: switch, internet, router or a guest name."""
        return f"{self.prefix}{role}"

    @property
    def switch(self) -> str:
        return self.ns("switch")

    @property
    def internet(self) -> str:
        return self.ns("internet")

    @property
    def router(self) -> str:
        return self.ns("router")

    @property
    def control_bridge(self) -> str:
        return f"{self.prefix}ctl"

    @property
    def control_veth(self) -> str:
        """Root-namespace end of the router's control veth (the other end is eth1)."""
        return f"{self.prefix}cv"

    @property
    def router_id(self) -> str:
        return f"r-{self.lab}"

    def role_of(self, ns: str) -> str | None:
        return ns[len(self.prefix):] if ns.startswith(self.prefix) else None


def control_addresses(octet: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """(host bridge address, router eth1 address) of control subnet 169.254.<octet>.0/24."""
    return (
        ipaddress.IPv4Interface(f"169.254.{octet}.1/24"),
        ipaddress.IPv4Interface(f"169.254.{octet}.2/24"),
    )
