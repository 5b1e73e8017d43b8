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

#: The underlay: the "data-centre LAN" between a lab's hypervisor hosts that carries
#: VXLAN (and, for lab remote hosts, SSH). It is 198.18.<octet>.0/24 (RFC 2544's
#: benchmarking range, which no real network routes), <octet> being the lab's control
#: octet, so two labs never clash. Bridge UNDERLAY_BRIDGE in the switch namespace holds
#: .1 (the local host's VXLAN address), remote host k is .10+k, and the root-namespace
#: link skf-<lab>-ul (how the management server reaches remote hosts) is .254.
#: Its MTU is 1550, so a segment that spans hosts keeps MTU 1500 inside VXLAN (50 bytes
#: of outer headers); guests never need a smaller MTU.
UNDERLAY_BRIDGE = "underlay"
UNDERLAY_MTU = 1550
UNDERLAY_LOCAL_HOST = 1
UNDERLAY_ROOT_HOST = 254
MAX_REMOTE_HOSTS = 200


def underlay_network(control_octet: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"198.18.{control_octet}.0/24")

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

GUEST_NAME_RE = re.compile(r"^([gh])([1-9][0-9]{0,2})$")

#: The road-warrior client of ``--roadwarrior``: a namespace "rw" on the public segment
#: (so it reaches every router's public address directly), default route via the internet.
ROADWARRIOR = "rw"
ROADWARRIOR_IP = ipaddress.IPv4Address("203.0.113.50")
ROADWARRIOR_MAC = "52:54:00:01:02:32"


@dataclass(frozen=True)
class Network:
    """One isolated guest network of the lab: its bridge, CIDR and guest name letter."""

    index: int
    bridge: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    guest_letter: str

    @property
    def router(self) -> str:
        """Name of the (first) router of this network."""
        return "router" if self.index == 1 else f"router{self.index}"


NETWORKS = {
    1: Network(1, "guest", GUEST_CIDR, GUEST_GATEWAY, "g"),
    2: Network(2, "guest2", ipaddress.IPv4Network("10.1.2.0/24"),
               ipaddress.IPv4Address("10.1.2.1"), "h"),
}
MAX_NETWORKS = len(NETWORKS)


@dataclass(frozen=True)
class RouterSpec:
    """One router of the lab: namespace role, network, MACs, public and control addresses.

    ``tag`` is short: it ends the root-namespace control veth (skf-<lab>-cv<tag>) and
    starts the router's switch ports (<tag>-guest, <tag>-public).
    """

    name: str
    network: int
    tag: str
    control_host: int
    macs: dict[str, str]
    public_ip: ipaddress.IPv4Address
    spare_public_ips: tuple[ipaddress.IPv4Address, ...]

    def router_id(self, lab: str) -> str:
        return f"r-{lab}" if self.name == "router" else f"r-{lab}-{self.name}"

    @property
    def agent_key(self) -> str:
        """Key of the router's agent in Lab.pids and name of its log."""
        return "agent" if self.name == "router" else f"agent-{self.name}"

    @property
    def port_guest(self) -> str:
        return f"{self.tag}-guest"

    @property
    def port_public(self) -> str:
        return f"{self.tag}-public"


def _ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


#: Every router the lab can build. "rb" is the second router of a redundant pair: the
#: same guest and public segments as "router", its own MACs and control address.
ROUTERS = {
    "router": RouterSpec("router", 1, "rtr", 2, ROUTER_MACS, ROUTER_PUBLIC_IP,
                         SPARE_PUBLIC_IPS),
    "router2": RouterSpec("router2", 2, "r2", 4, {
        "eth0": "52:54:00:02:01:01", "eth1": "52:54:00:01:03:04", "eth2": "52:54:00:02:02:14",
    }, _ip("203.0.113.20"), (_ip("203.0.113.21"), _ip("203.0.113.22"))),
    "rb": RouterSpec("rb", 1, "rb", 3, {
        "eth0": "52:54:00:01:01:03", "eth1": "52:54:00:01:03:03", "eth2": "52:54:00:01:02:0b",
    }, ROUTER_PUBLIC_IP, SPARE_PUBLIC_IPS),
}
REDUNDANT_ROUTER = "rb"


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
    """One guest instance of the lab: name gK (network 1) or hK (network 2), fixed MAC
    52:54:00:<network>:01:<10+K> and DHCP address <network CIDR>.<10+K>."""

    index: int
    network: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_GUESTS:
            raise ValueError(f"guest index {self.index} is outside 1..{MAX_GUESTS}")
        if self.network not in NETWORKS:
            raise ValueError(f"guest network {self.network} is outside 1..{MAX_NETWORKS}")

    @classmethod
    def from_name(cls, name: str) -> Guest:
        m = GUEST_NAME_RE.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a guest name (g1, g2, ... or h1, h2, ...)")
        network = next(k for k, net in NETWORKS.items() if net.guest_letter == m.group(1))
        return cls(int(m.group(2)), network)

    @property
    def name(self) -> str:
        return f"{NETWORKS[self.network].guest_letter}{self.index}"

    @property
    def mac(self) -> str:
        return f"52:54:00:{self.network:02x}:01:{10 + self.index:02x}"

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return NETWORKS[self.network].cidr.network_address + 10 + self.index


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

    def control_veth_of(self, router: str) -> str:
        """Root-namespace end of a router's control veth: skf-<lab>-cv, -cv2, -cvb."""
        tag = "" if router == "router" else router.removeprefix("router").removeprefix("r")
        return f"{self.prefix}cv{tag}"

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


def control_addresses(octet: int, router: str = "router",
                      ) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """(host bridge address, router eth1 address) of control subnet 169.254.<octet>.0/24:
    .2 for router, .3 for rb, .4 for router2."""
    return (
        ipaddress.IPv4Interface(f"169.254.{octet}.1/24"),
        ipaddress.IPv4Interface(f"169.254.{octet}.{ROUTERS[router].control_host}/24"),
    )
