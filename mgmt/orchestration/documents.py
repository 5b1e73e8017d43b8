"""A router's whole desired-state document, computed from the database.

``load`` reads everything one router serves (its NICs, the network, the
network's public IPs, instances, rules, VPN) in a handful of queries;
``build`` turns that into the document's JSON data without touching the
database, so it is tested on plain objects.

Rule states decide what the document holds (see mgmt.db.models.rules): an
applied item (``Active``; a remote-access VPN ``Running``; a VPN connection
``Connected``, ``Disconnected`` or ``Error``) is in; an ``Add`` item (``Added``,
``Pending``) is in when ``include`` admits it (the job applying it), a
``Revoke`` item is out when ``include`` admits it (the job removing it) and
still in otherwise; a connection being reset (``Reset``) is out. ``include=None``
admits every pending item. ``Inputs.pending`` lists the pending items the document settled, so the
caller can mark them done once the router has applied it.

VPN secrets are sealed in the database (mgmt.db.sealing); ``build`` opens them
with ``Inputs.sealer``, the only place they are ever opened.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models import Zone
from mgmt.db.models.catalog import NetworkOffering, ServiceOffering
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import PublicIp, VlanIpRange
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import (
    CustomerGateway,
    FirewallRule,
    LbMember,
    LbPolicy,
    RemoteAccessVpn,
    VpnConnection,
    VpnGateway,
    VpnUser,
)
from mgmt.db.sealing import RA_PSK, S2S_PSK, VPN_PASSWORD, NoKey, Sealer

#: Instance states whose NICs the router serves (DHCP, DNS, metadata).
SERVED_STATES = ("Starting", "Running", "Stopping", "Stopped")
#: Item keys: ("rule" | "member" | "policy" | "vpnuser" | "ravpn" | "s2s", row id).
Key = tuple[str, int]
Include = Callable[[Key], bool] | None


def admits(include: Include, key: Key) -> bool:
    return include is None or include(key)


#: States of an item waiting to be applied (CloudStack's names differ by table).
ADDING = ("Add", "Added", "Pending")
#: States of an item that is left out whatever the job (a connection being reset).
HIDDEN = ("Reset",)


def visible(state: str, key: Key, include: Include) -> bool:
    """Whether an item in ``state`` belongs in the document being built."""
    if state in ADDING:
        return admits(include, key)
    if state == "Revoke":
        return not admits(include, key)
    return state not in HIDDEN


#: Of a redundant pair: what keepalived needs beyond the shared document.
VRRP_ADVERT_S = 1


@dataclass
class Pair:
    vrid: int
    password: str
    #: The other router's own guest address; while it is being replaced, the last
    #: one it had (the new one usually gets it back).
    peer_guest_ip: str


@dataclass
class Inputs:
    router: Router
    vm: VmInstance
    nics: list[Nic]
    network: Network
    zone: Zone
    offering: NetworkOffering
    public_ips: list[PublicIp]
    public_range: VlanIpRange | None
    instances: list[tuple[VmInstance, Nic, ServiceOffering | None]]
    rules: list[FirewallRule]
    addresses: dict[int, str]  # public IP row id -> address
    members: dict[int, list[LbMember]] = field(default_factory=dict)
    policies: dict[int, list[LbPolicy]] = field(default_factory=dict)
    ra_vpn: RemoteAccessVpn | None = None
    vpn_users: list[VpnUser] = field(default_factory=list)
    s2s: list[tuple[VpnConnection, CustomerGateway, str]] = field(default_factory=list)
    #: Pending items the built document settles: key -> the state they were in.
    pending: dict[Key, str] = field(default_factory=dict)
    pair: Pair | None = None
    #: Opens the sealed VPN secrets (without a key, a document with VPNs fails).
    sealer: Sealer | NoKey = field(default_factory=NoKey)


async def load(session: AsyncSession, router_id: int, sealer: Sealer | NoKey,
               secret: Callable[[str], str] | None = None) -> Inputs:
    """Everything router_id serves. ``secret(label)``: a secret every server derives
    alike (the appliance CA's), for a redundant pair's VRRP password."""
    router = await session.get_one(Router, router_id)
    vm = await session.get_one(VmInstance, router.vm_id)
    network = await session.get_one(Network, router.network_id)
    nics = list((await session.scalars(
        select(Nic).where(Nic.vm_id == vm.id, Nic.live()).order_by(Nic.device_id))).all())
    public_ips = list((await session.scalars(
        select(PublicIp).where(PublicIp.network_id == network.id, PublicIp.live(),
                               PublicIp.state == "Allocated").order_by(PublicIp.id))).all())
    snat = next((p for p in public_ips if p.source_nat), None)
    public_range = await session.get(VlanIpRange, snat.vlan_range_id) if snat else None
    rows = (await session.execute(
        select(VmInstance, Nic, ServiceOffering)
        .join(Nic, Nic.vm_id == VmInstance.id)
        .outerjoin(ServiceOffering, ServiceOffering.id == VmInstance.service_offering_id)
        .where(Nic.network_id == network.id, Nic.live(), VmInstance.type == "User",
               VmInstance.live(), VmInstance.state.in_(SERVED_STATES))
        .order_by(Nic.id))).all()
    rules = list((await session.scalars(
        select(FirewallRule).where(FirewallRule.network_id == network.id, FirewallRule.live())
        .order_by(FirewallRule.id))).all())
    lb_ids = [r.id for r in rules if r.purpose == "LoadBalancing"]
    members: dict[int, list[LbMember]] = {}
    policies: dict[int, list[LbPolicy]] = {}
    if lb_ids:
        # Members whose instance is destroyed or expunged are out of rotation (and
        # back when it is recovered), as the router serves only SERVED_STATES.
        for m in (await session.scalars(select(LbMember).join(
                VmInstance, VmInstance.id == LbMember.vm_id).where(
                LbMember.rule_id.in_(lb_ids), LbMember.live(), VmInstance.live(),
                VmInstance.state.in_(SERVED_STATES)).order_by(LbMember.id))).all():
            members.setdefault(m.rule_id, []).append(m)
        for p in (await session.scalars(select(LbPolicy).where(
                LbPolicy.rule_id.in_(lb_ids), LbPolicy.live()).order_by(LbPolicy.id))).all():
            policies.setdefault(p.rule_id, []).append(p)
    ra_vpn = await session.scalar(select(RemoteAccessVpn).where(
        RemoteAccessVpn.network_id == network.id, RemoteAccessVpn.live()))
    users = list((await session.scalars(select(VpnUser).where(
        VpnUser.account_id == network.account_id, VpnUser.live()).order_by(VpnUser.id))).all())
    s2s_rows = (await session.execute(
        select(VpnConnection, CustomerGateway, PublicIp.address)
        .join(VpnGateway, VpnGateway.id == VpnConnection.vpn_gateway_id)
        .join(CustomerGateway, CustomerGateway.id == VpnConnection.customer_gateway_id)
        .join(PublicIp, PublicIp.id == VpnGateway.ip_address_id)
        .where(VpnGateway.network_id == network.id, VpnConnection.live(), VpnGateway.live())
        .order_by(VpnConnection.id))).all()
    return Inputs(
        router=router, vm=vm, nics=nics, network=network,
        zone=await session.get_one(Zone, network.zone_id),
        offering=await session.get_one(NetworkOffering, network.network_offering_id),
        public_ips=public_ips, public_range=public_range,
        instances=[(v, n, o) for v, n, o in rows], rules=rules,
        addresses={p.id: p.address for p in public_ips},
        members=members, policies=policies, ra_vpn=ra_vpn, vpn_users=users,
        s2s=[(c, g, a) for c, g, a in s2s_rows], sealer=sealer,
        pair=await _pair(session, router, network, secret) if router.is_redundant else None,
    )


async def _pair(session: AsyncSession, router: Router, network: Network,
                secret: Callable[[str], str] | None) -> Pair | None:
    if secret is None:
        raise ValueError("a redundant router's document needs the servers' secret")
    peer_ip = await session.scalar(
        select(Nic.ip_address).join(VmInstance, VmInstance.id == Nic.vm_id)
        .where(Nic.network_id == network.id, Nic.traffic_type == "Guest",
               VmInstance.type == "DomainRouter", Nic.vm_id != router.vm_id,
               Nic.ip_address != network.gateway)
        .order_by(Nic.removed.is_(None).desc(), Nic.id.desc()).limit(1))
    if peer_ip is None:
        return None
    return Pair(vrid=1 + network.id % 255, password=secret(f"vrrp/{network.uuid}"),
                peer_guest_ip=peer_ip)


def _cidrs(text: str | None, default: list[str] | None = None) -> list[str]:
    items = [c.strip() for c in (text or "").split(",") if c.strip()]
    return items or list(default or [])


def _ports(rule: FirewallRule) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": rule.protocol.lower()}
    if out["protocol"] in ("tcp", "udp"):
        out["start_port"] = rule.start_port
        out["end_port"] = rule.end_port
    elif out["protocol"] == "icmp":
        out["icmp_type"] = rule.icmp_type
        out["icmp_code"] = rule.icmp_code
    return out


def build(inp: Inputs, include: Include = None) -> dict[str, Any]:
    """The document's JSON data (generation 0: the caller numbers it)."""
    inp.pending = {}
    net = inp.network
    cidr = ipaddress.IPv4Network(net.cidr)

    def shown(state: str, key: Key) -> bool:
        if (state in ADDING or state == "Revoke") and admits(include, key):
            inp.pending[key] = state
        return visible(state, key, include)

    interfaces = []
    snat = next((p for p in inp.public_ips if p.source_nat), None)
    for nic in inp.nics:
        if nic.traffic_type == "Guest":
            interfaces.append({"role": "guest", "name": f"eth{nic.device_id}", "mac": nic.mac,
                               "addresses": [f"{net.gateway}/{cidr.prefixlen}"]})
        elif nic.traffic_type == "Control":
            interfaces.append({"role": "control", "name": f"eth{nic.device_id}", "mac": nic.mac,
                               "addresses": [f"{nic.ip_address}/{_prefix(nic.netmask)}"]})
        elif nic.traffic_type == "Public" and snat is not None:
            interfaces.append({"role": "public", "name": f"eth{nic.device_id}", "mac": nic.mac,
                               "addresses": [f"{snat.address}/{_prefix(nic.netmask)}"],
                               "gateway": nic.gateway})
    resolvers = [d for d in (inp.zone.dns1, inp.zone.dns2) if d]
    doc: dict[str, Any] = {
        "router_id": inp.vm.name,
        "generation": 0,
        "interfaces": interfaces,
        "guest_network": {"cidr": str(cidr), "gateway": net.gateway,
                          "domain": net.network_domain or "cloud.internal",
                          "upstream_resolvers": resolvers},
        "public_ips": [{"ip": p.address, "source_nat": p.source_nat} for p in inp.public_ips],
        "dhcp_hosts": [],
        "guest_data": [],
        "ingress_rules": [],
        "egress": {"default_policy": "allow" if inp.offering.egress_default_policy else "deny",
                   "rules": []},
        "port_forwards": [],
        "static_nats": [],
        "load_balancers": [],
    }
    for vm, nic, offering in inp.instances:
        if not nic.ip_address:
            continue
        hostname = vm.host_name or vm.name
        doc["dhcp_hosts"].append({"mac": nic.mac, "ip": nic.ip_address, "hostname": hostname,
                                  "default_gateway": nic.is_default})
        doc["guest_data"].append({
            "instance_id": vm.uuid, "vm_id": vm.name, "ip": nic.ip_address, "mac": nic.mac,
            "local_hostname": hostname,
            "service_offering": offering.name if offering else "",
            "availability_zone": inp.zone.name, "user_data": vm.user_data or "",
        })
    for rule in inp.rules:
        key: Key = ("rule", rule.id)
        if not shown(rule.state, key):
            continue
        public_ip = inp.addresses.get(rule.ip_address_id or -1)
        if rule.purpose == "Firewall" and rule.traffic_type == "Ingress" and public_ip:
            doc["ingress_rules"].append({
                "id": f"fw-{rule.id}", "public_ip": public_ip, **_ports(rule),
                "source_cidrs": _cidrs(rule.source_cidrs, ["0.0.0.0/0"])})
        elif rule.purpose == "Firewall" and rule.traffic_type == "Egress":
            doc["egress"]["rules"].append({
                "id": f"eg-{rule.id}", **_ports(rule),
                "source_cidrs": _cidrs(rule.source_cidrs),
                "destination_cidrs": _cidrs(rule.dest_cidrs, ["0.0.0.0/0"])})
        elif rule.purpose == "PortForwarding" and public_ip and rule.dest_ip:
            doc["port_forwards"].append({
                "id": f"pf-{rule.id}", "public_ip": public_ip, "protocol": rule.protocol.lower(),
                "public_start": rule.start_port, "public_end": rule.end_port,
                "guest_ip": rule.dest_ip, "guest_start": rule.dest_start,
                "guest_end": rule.dest_end,
                "source_cidrs": _cidrs(rule.source_cidrs, ["0.0.0.0/0"])})
        elif rule.purpose == "LoadBalancing" and public_ip:
            doc["load_balancers"].append(_lb(inp, rule, public_ip, shown))
    for p in inp.public_ips:
        if p.static_nat_vm_id and p.static_nat_ip:
            doc["static_nats"].append({"public_ip": p.address, "guest_ip": p.static_nat_ip})
    vpn = _vpn(inp, shown, resolvers)
    if vpn:
        doc["vpn"] = vpn
    if inp.pair is not None:
        doc["redundancy"] = _redundancy(inp, inp.pair, cidr)
    return doc


def _redundancy(inp: Inputs, pair: Pair, cidr: ipaddress.IPv4Network) -> dict[str, Any]:
    """keepalived and conntrackd over the guest interface, where each router of the
    pair has its own address; the gateway and the public addresses are shared."""
    guest = next(n for n in inp.nics if n.traffic_type == "Guest")
    return {
        "vrid": pair.vrid, "priority": inp.router.priority or 100,
        "advert_interval_s": VRRP_ADVERT_S, "password": pair.password,
        "sync_interface": f"eth{guest.device_id}", "peer_ip": pair.peer_guest_ip,
        "own_addresses": [{"interface": f"eth{guest.device_id}",
                           "address": f"{guest.ip_address}/{cidr.prefixlen}"}],
    }


def _lb(inp: Inputs, rule: FirewallRule, public_ip: str, shown) -> dict[str, Any]:
    members = [{"id": f"m-{m.id}", "ip": m.ip}
               for m in inp.members.get(rule.id, []) if shown(m.state, ("member", m.id))]
    lb: dict[str, Any] = {
        "id": f"lb-{rule.id}", "public_ip": public_ip, "public_port": rule.start_port,
        "private_port": rule.dest_start, "algorithm": rule.algorithm or "roundrobin",
        "protocol": rule.lb_protocol or "tcp", "members": members,
        "source_cidrs": _cidrs(rule.source_cidrs, ["0.0.0.0/0"]),
    }
    for policy in inp.policies.get(rule.id, []):
        if not shown(policy.state, ("policy", policy.id)):
            continue
        params = json.loads(policy.params or "{}")
        if policy.kind == "Stickiness":
            lb["stickiness"] = {"method": policy.method, **params}
        elif policy.kind == "HealthCheck":
            lb["health_check"] = params
    return lb


def _vpn(inp: Inputs, shown, resolvers: list[str]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    ra = inp.ra_vpn
    if ra is not None and shown(ra.state, ("ravpn", ra.id)) and ra.ip_address_id in inp.addresses:
        start, _, end = ra.ip_range.partition("-")
        out["remote_access"] = {
            "public_ip": inp.addresses[ra.ip_address_id], "pool_start": start.strip(),
            "pool_end": (end or start).strip(),
            "psk": inp.sealer.unseal(ra.preshared_key, RA_PSK),
            "dns_servers": [inp.network.gateway],
            "users": [{"name": u.username, "password": inp.sealer.unseal(u.password, VPN_PASSWORD)}
                      for u in inp.vpn_users if shown(u.state, ("vpnuser", u.id))],
        }
    site = []
    for conn, gw, local_ip in inp.s2s:
        if not shown(conn.state, ("s2s", conn.id)):
            continue
        site.append({
            "id": f"s2s-{conn.id}", "local_gateway": local_ip, "peer_gateway": gw.gateway,
            "local_cidrs": [inp.network.cidr], "peer_cidrs": _cidrs(gw.cidr_list),
            "ike_policy": gw.ike_policy, "esp_policy": gw.esp_policy,
            "psk": inp.sealer.unseal(gw.ipsec_psk, S2S_PSK),
            "ike_version": {"ikev1": "ikev1", "ikev2": "ikev2"}.get(gw.ike_version, "ike"),
            "ike_lifetime_s": gw.ike_lifetime, "esp_lifetime_s": gw.esp_lifetime,
            "dpd": gw.dpd, "passive": conn.passive, "force_encap": gw.force_encap,
            "split_connections": gw.split_connections,
        })
    if site:
        out["site_to_site"] = site
    return out or None


def _prefix(netmask: str | None) -> int:
    if not netmask:
        return 24
    return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
