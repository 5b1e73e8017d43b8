"""What the network-rule commands share: lookups, input checks, conflicts, answers.

Checks follow CloudStack's: protocols, port ranges, CIDR lists and ICMP values
are refused with 431 naming the field; a rule that would collide with another
on the same public IP (overlapping ports of the same protocol, a forward on a
static-NAT address, ...) is refused with 537, NETWORK_RULE_CONFLICT_ERROR.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sqlalchemy import select

from mgmt.api.errors import ApiError, param_error
from mgmt.commands.common import not_found
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule
from mgmt.db.rowlocks import lock_rows
from mgmt.db.tenancy import owned_by

RULE_CONFLICT = 537
LIVE_STATES = ("Add", "Active")


def conflict(text: str) -> ApiError:
    return ApiError(RULE_CONFLICT, text)


async def visible_ip(session, call, uuid: str) -> PublicIp:
    ip = await session.scalar(owned_by(
        select(PublicIp).where(PublicIp.uuid == uuid, PublicIp.live(),
                               PublicIp.state == "Allocated"), PublicIp, call.caller,
        with_projects=True))
    if ip is None:
        raise not_found("public IP address", uuid)
    return ip


async def ip_network(session, ip: PublicIp) -> Network:
    if ip.network_id is None:
        raise param_error(f"public IP {ip.address} is not associated with a network")
    return await session.get_one(Network, ip.network_id)


async def visible_network(session, call, uuid: str) -> Network:
    network = await session.scalar(owned_by(
        select(Network).where(Network.uuid == uuid, Network.live()), Network, call.caller,
        with_projects=True))
    if network is None:
        raise not_found("network", uuid)
    return network


async def guest_vm(session, call, uuid: str, network: Network,
                   guest_ip: str | None = None) -> tuple[VmInstance, Nic]:
    """An instance of the caller's with a NIC in the network (and that address)."""
    vm = await session.scalar(owned_by(
        select(VmInstance).where(VmInstance.uuid == uuid, VmInstance.type == "User",
                                 VmInstance.live()), VmInstance, call.caller,
        with_projects=True))
    if vm is None:
        raise not_found("virtual machine", uuid)
    nic = await session.scalar(select(Nic).where(Nic.vm_id == vm.id, Nic.live(),
                                                 Nic.network_id == network.id))
    if nic is None:
        raise param_error(f"instance {vm.host_name} has no NIC in network {network.name}")
    if guest_ip and guest_ip != nic.ip_address:
        raise param_error(f"vmguestip {guest_ip} is not an address of instance {vm.host_name} "
                          f"in network {network.name}")
    if vm.state in ("Destroyed", "Expunging", "Error"):
        raise param_error(f"instance {vm.host_name} is {vm.state}")
    return vm, nic


def protocol(value: str, allowed: Iterable[str]) -> str:
    p = value.strip().lower()
    choices = tuple(allowed)
    if p not in choices:
        raise param_error(f"protocol {value[:20]!r} is not one of {', '.join(choices)}")
    return p


def port_range(start: int | None, end: int | None, what: str = "port") -> tuple[int, int]:
    if start is None:
        raise param_error(f"start{what} is required for TCP and UDP")
    end = start if end is None else end
    for name, value in ((f"start{what}", start), (f"end{what}", end)):
        if not 1 <= value <= 65535:
            raise param_error(f"{name} {value} is outside 1-65535")
    if end < start:
        raise param_error(f"end{what} {end} is below start{what} {start}")
    return start, end


def cidr_list(values: list[str] | None, name: str = "cidrlist") -> list[str]:
    out = []
    for value in values or []:
        try:
            net = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            raise param_error(f"{name}: {value[:60]!r} is not an IPv4 CIDR") from None
        if str(net) != value and str(net.network_address) != value:
            raise param_error(f"{name}: {value} has host bits set (did you mean {net}?)")
        out.append(str(net))
    return out


def icmp(value: int | None, name: str) -> int | None:
    if value is not None and not -1 <= value <= 255:
        raise param_error(f"{name} {value} is outside -1..255")
    return value


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _cidrs_overlap(a: str | None, b: str | None) -> bool:
    def nets(text):
        return [ipaddress.IPv4Network(c) for c in (text or "0.0.0.0/0").split(",") if c]

    return any(x.overlaps(y) for x in nets(a) for y in nets(b))


def _range(rule: FirewallRule) -> tuple[int, int] | None:
    if rule.start_port is None:
        return None
    return rule.start_port, rule.end_port or rule.start_port


async def check_conflicts(session, ip: PublicIp, new: FirewallRule) -> None:
    """CloudStack's detectRulesConflict for a rule about to be added on ``ip``.

    Holds ``ip`` (mgmt.db.rowlocks) until the caller's transaction ends, so no other
    server checks a clashing rule against the same rules before this one is added."""
    await lock_public_ip(session, ip)
    if new.purpose in ("PortForwarding", "LoadBalancing") and ip.static_nat_vm_id:
        raise conflict(f"public IP {ip.address} has static NAT enabled: it cannot also "
                       "carry port forwarding or load balancing rules")
    existing = (await session.scalars(select(FirewallRule).where(
        FirewallRule.ip_address_id == ip.id, FirewallRule.live(),
        FirewallRule.state.in_(LIVE_STATES), FirewallRule.traffic_type == new.traffic_type,
    ))).all()
    mine = _range(new)
    for rule in existing:
        if rule.id == new.id:
            continue
        theirs = _range(rule)
        same_proto = rule.protocol == new.protocol or "all" in (rule.protocol, new.protocol)
        if new.purpose == "Firewall" and rule.purpose == "Firewall":
            if not same_proto or not _cidrs_overlap(rule.source_cidrs, new.source_cidrs):
                continue
            if mine is None or theirs is None or _overlap(mine, theirs):
                if new.protocol == "icmp" and rule.protocol == "icmp" and (
                        (new.icmp_type, new.icmp_code) != (rule.icmp_type, rule.icmp_code)
                        and -1 not in (new.icmp_type, rule.icmp_type)):
                    continue
                raise conflict(f"the new firewall rule overlaps firewall rule {rule.uuid} on "
                               f"{ip.address} ({rule.protocol} {_text(theirs)} from "
                               f"{rule.source_cidrs or '0.0.0.0/0'})")
        elif (new.purpose != "Firewall" and rule.purpose != "Firewall" and same_proto
              and mine and theirs and _overlap(mine, theirs)):
            raise conflict(f"public ports {_text(mine)} ({new.protocol}) of {ip.address} "
                           f"overlap {rule.purpose} rule {rule.uuid} "
                           f"({rule.protocol} {_text(theirs)})")


async def lock_public_ip(session, ip: PublicIp) -> None:
    """Hold ``ip`` against other servers' rule and static NAT changes until the
    transaction ends, and read it again (another may have changed it meanwhile)."""
    await lock_rows(session, PublicIp, PublicIp.id == ip.id)
    await session.refresh(ip)


def _text(ports: tuple[int, int] | None) -> str:
    if ports is None:
        return "all ports"
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def firewall_fields(rule: FirewallRule, ip: PublicIp | None, network: Network) -> dict:
    answer = {
        "id": rule.uuid,
        "protocol": rule.protocol,
        "startport": rule.start_port,
        "endport": rule.end_port,
        "icmptype": rule.icmp_type,
        "icmpcode": rule.icmp_code,
        "ipaddressid": ip.uuid if ip else None,
        "ipaddress": ip.address if ip else None,
        "networkid": network.uuid,
        "state": rule.state,
        "cidrlist": rule.source_cidrs or "0.0.0.0/0",
        "traffictype": rule.traffic_type,
        "fordisplay": True,
        "tags": [],
    }
    if rule.traffic_type == "Egress":
        answer["destcidrlist"] = rule.dest_cidrs or "0.0.0.0/0"
        answer["cidrlist"] = rule.source_cidrs or network.cidr
    return {k: v for k, v in answer.items() if v is not None}
