"""The virtual router's desired-state document (schema version 1).

The management server builds one of these per router and the agent converges
the router to it. Field-level rules live here (types, ranges, character sets);
rules that relate fields to each other live in :mod:`appliances.router.verify`
so that they can report every problem at once with its exact location.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from appliances.common.types import (
    CidrV4,
    DomainName,
    HostIPv4,
    Hostname,
    IcmpValue,
    IfName,
    Mac,
    Port,
    SafeId,
)
from appliances.router.sections.guest_data import InstanceData
from appliances.router.sections.load_balancing import LbRule
from appliances.router.sections.redundancy import Redundancy
from appliances.router.sections.vpn import Vpn

SCHEMA_VERSION = 1
ANY_V4 = "0.0.0.0/0"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interface(_Model):
    """A NIC of the router. The name is the device inside the appliance."""

    role: Literal["guest", "public", "control"]
    name: IfName
    mac: Mac | None = None
    addresses: list[ipaddress.IPv4Interface] = Field(min_length=1, max_length=64)
    mtu: int = Field(default=1500, ge=576, le=9216)
    gateway: HostIPv4 | None = Field(
        default=None, description="Next hop for the default route (public interface only)."
    )


class GuestRoute(_Model):
    """A classless static route (DHCP option 121) handed to guests."""

    destination: CidrV4
    gateway: HostIPv4


class GuestNetwork(_Model):
    cidr: CidrV4
    gateway: HostIPv4
    domain: DomainName
    dns_servers: list[HostIPv4] = Field(
        default_factory=list,
        max_length=8,
        description="Resolvers told to guests; empty means the router itself.",
    )
    upstream_resolvers: list[HostIPv4] = Field(default_factory=list, max_length=8)
    classless_routes: list[GuestRoute] = Field(default_factory=list, max_length=32)
    lease_seconds: int | None = Field(
        default=None, ge=120, le=31_536_000, description="None: infinite, as CloudStack."
    )


class PublicIp(_Model):
    ip: HostIPv4
    source_nat: bool = False


class DhcpHost(_Model):
    mac: Mac
    ip: HostIPv4
    hostname: Hostname
    default_gateway: bool = True


class DnsRecord(_Model):
    name: DomainName
    ip: HostIPv4


class _PortsMixin(_Model):
    """Protocol, ports and ICMP values, validated together as CloudStack does."""

    protocol: Literal["tcp", "udp", "icmp", "all"]
    start_port: Port | None = None
    end_port: Port | None = None
    icmp_type: IcmpValue | None = None
    icmp_code: IcmpValue | None = None

    @model_validator(mode="after")
    def _ports_fit_protocol(self) -> Self:
        if self.protocol in ("tcp", "udp"):
            if self.start_port is None:
                raise ValueError(f"start_port is required for protocol {self.protocol}")
            if self.end_port is not None and self.end_port < self.start_port:
                raise ValueError(f"end_port {self.end_port} is below start_port {self.start_port}")
            if self.icmp_type is not None or self.icmp_code is not None:
                raise ValueError("icmp_type/icmp_code are only for protocol icmp")
        else:
            if self.start_port is not None or self.end_port is not None:
                raise ValueError(f"ports are not allowed for protocol {self.protocol}")
            if self.protocol == "all" and (
                self.icmp_type is not None or self.icmp_code is not None
            ):
                raise ValueError("icmp_type/icmp_code are only for protocol icmp")
            if (
                self.protocol == "icmp"
                and self.icmp_type in (None, -1)
                and self.icmp_code
                not in (
                    None,
                    -1,
                )
            ):
                raise ValueError("icmp_code needs a specific icmp_type")
        return self

    @property
    def port_range(self) -> tuple[int, int] | None:
        if self.start_port is None:
            return None
        return self.start_port, self.end_port or self.start_port


class IngressRule(_PortsMixin):
    """Allows traffic from source_cidrs to one public IP (default is deny)."""

    id: SafeId
    public_ip: HostIPv4
    source_cidrs: list[CidrV4] = Field(
        default_factory=lambda: [ANY_V4], min_length=1, max_length=256
    )


class EgressRule(_PortsMixin):
    """Matches guest traffic leaving the network; its verdict is the opposite
    of the network's default egress policy, as in CloudStack."""

    id: SafeId
    source_cidrs: list[CidrV4] = Field(
        default_factory=list, max_length=256, description="Empty: the whole guest network."
    )
    destination_cidrs: list[CidrV4] = Field(
        default_factory=lambda: [ANY_V4], min_length=1, max_length=256
    )


class Egress(_Model):
    default_policy: Literal["allow", "deny"] = "allow"
    rules: list[EgressRule] = Field(default_factory=list)


class PortForward(_Model):
    """Public IP and port(s) to a guest address and port(s).

    As in CloudStack, a forward does not open the firewall by itself: traffic
    reaches it only if an ingress rule on the public IP allows it (the
    management server adds that rule when openfirewall is true, the default).
    ``source_cidrs`` narrows further who may use the forward.
    """

    id: SafeId
    public_ip: HostIPv4
    protocol: Literal["tcp", "udp"]
    public_start: Port
    public_end: Port | None = None
    guest_ip: HostIPv4
    guest_start: Port
    guest_end: Port | None = None
    source_cidrs: list[CidrV4] = Field(
        default_factory=lambda: [ANY_V4], min_length=1, max_length=256
    )

    @model_validator(mode="after")
    def _ranges_match(self) -> Self:
        pub_start, pub_end = self.public_range
        if pub_end < pub_start:
            raise ValueError(f"public_end {pub_end} is below public_start {pub_start}")
        if self.guest_end is not None:
            if self.guest_end < self.guest_start:
                raise ValueError(
                    f"guest_end {self.guest_end} is below guest_start {self.guest_start}"
                )
            if pub_end - pub_start != self.guest_end - self.guest_start:
                raise ValueError(
                    f"public range {pub_start}-{pub_end} and guest range "
                    f"{self.guest_start}-{self.guest_end} must be the same size"
                )
        elif self.guest_start + (pub_end - pub_start) > 65535:
            raise ValueError(f"guest range starting at {self.guest_start} would pass port 65535")
        return self

    @property
    def public_range(self) -> tuple[int, int]:
        return self.public_start, self.public_end or self.public_start

    @property
    def guest_range(self) -> tuple[int, int]:
        """The guest ports; guest_end defaults to a range as long as the public one."""
        start, end = self.public_range
        return self.guest_start, self.guest_end or self.guest_start + (end - start)


class StaticNat(_Model):
    """One-to-one NAT; inbound traffic still needs ingress rules on the public IP."""

    public_ip: HostIPv4
    guest_ip: HostIPv4


class StaticRoute(_Model):
    cidr: CidrV4
    gateway: HostIPv4


class RouterDocument(_Model):
    """Everything one virtual router must be. Replaces the previous document whole."""

    schema_version: Literal[1] = SCHEMA_VERSION
    router_id: SafeId
    generation: int = Field(ge=0)
    interfaces: list[Interface] = Field(min_length=1, max_length=16)
    guest_network: GuestNetwork
    public_ips: list[PublicIp] = Field(default_factory=list)
    dhcp_hosts: list[DhcpHost] = Field(default_factory=list)
    dns_records: list[DnsRecord] = Field(default_factory=list)
    ingress_rules: list[IngressRule] = Field(default_factory=list)
    egress: Egress = Field(default_factory=Egress)
    port_forwards: list[PortForward] = Field(default_factory=list)
    static_nats: list[StaticNat] = Field(default_factory=list)
    static_routes: list[StaticRoute] = Field(default_factory=list, max_length=1024)
    load_balancers: list[LbRule] = Field(default_factory=list, max_length=10_000)
    vpn: Vpn = Field(default_factory=Vpn)
    guest_data: list[InstanceData] = Field(default_factory=list, max_length=16_384)
    redundancy: Redundancy | None = None

    def interface(self, role: str) -> Interface | None:
        return next((i for i in self.interfaces if i.role == role), None)

    @property
    def source_nat_ip(self) -> str | None:
        return next((p.ip for p in self.public_ips if p.source_nat), None)
