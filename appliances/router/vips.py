"""Which addresses a redundant pair shares (VRRP virtual addresses), and how.

Neutron's lesson: one fixed primary VIP per segment goes in keepalived's
``virtual_ipaddress`` (it is in every advert and never changes), every other
shared address in ``virtual_ipaddress_excluded``, so adding or removing a public
IP and reloading never touches the address the default gateway hangs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from appliances.router.document import RouterDocument


@dataclass(frozen=True, order=True)
class Vip:
    address: str  # "10.1.1.1/24"
    dev: str


@dataclass(frozen=True)
class VipPlan:
    primary: list[Vip] = field(default_factory=list)
    excluded: list[Vip] = field(default_factory=list)
    #: (gateway, device) of the default route the primary holds, or None.
    default_route: tuple[str, str] | None = None

    def all(self) -> list[Vip]:
        return [*self.primary, *self.excluded]


def vip_plan(doc: RouterDocument) -> VipPlan:
    """The shared addresses of ``doc``: the guest gateway and the public interface's first
    address are the primary VIPs; further interface addresses and public IPs are excluded
    VIPs (public IPs as /32, as the non-redundant router puts them)."""
    primary: list[Vip] = []
    excluded: list[Vip] = []
    for iface in doc.interfaces:
        if iface.role == "control":
            continue
        addrs = [str(a) for a in iface.addresses]
        if iface.role == "guest":
            gw = doc.guest_network.gateway
            first = next((a for a in iface.addresses if str(a.ip) == gw), iface.addresses[0])
        else:
            first = iface.addresses[0]
        primary.append(Vip(str(first), iface.name))
        excluded += [Vip(a, iface.name) for a in addrs if a != str(first)]
        if iface.role == "public":
            own = {str(a.ip) for a in iface.addresses}
            excluded += [Vip(f"{p.ip}/32", iface.name) for p in doc.public_ips if p.ip not in own]
    public = doc.interface("public")
    route = (str(public.gateway), public.name) if public and public.gateway else None
    return VipPlan(primary, excluded, route)


def shared_by_interface(doc: RouterDocument) -> dict[str, set[str]]:
    """Interface name -> the shared "ip/prefix" strings on it (keepalived's to manage)."""
    out: dict[str, set[str]] = {}
    for vip in vip_plan(doc).all():
        out.setdefault(vip.dev, set()).add(str(IPv4Interface(vip.address)))
    return out
