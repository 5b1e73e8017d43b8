"""The router document the lab applies first, and helpers to derive variants for tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from appliances.lab import names
from appliances.lab.names import Guest
from appliances.router.document import RouterDocument
from appliances.router.verify import parse_document


def baseline_document(router_id: str, control_ip: ipaddress.IPv4Interface | str,
                      guests: Iterable[Guest] = (), generation: int = 1) -> RouterDocument:
    """Guest 10.1.1.0/24 behind 203.0.113.10 (source NAT), egress allowed, one DHCP host
    per guest; 203.0.113.11 and .12 are spare public IPs for tests."""
    data = {
        "router_id": router_id,
        "generation": generation,
        "interfaces": [
            {"role": "guest", "name": "eth0", "mac": names.ROUTER_MACS["eth0"],
             "addresses": [f"{names.GUEST_GATEWAY}/{names.GUEST_CIDR.prefixlen}"]},
            {"role": "control", "name": "eth1", "mac": names.ROUTER_MACS["eth1"],
             "addresses": [str(control_ip)]},
            {"role": "public", "name": "eth2", "mac": names.ROUTER_MACS["eth2"],
             "addresses": [f"{names.ROUTER_PUBLIC_IP}/{names.PUBLIC_CIDR.prefixlen}"],
             "gateway": str(names.INTERNET_IP)},
        ],
        "guest_network": {
            "cidr": str(names.GUEST_CIDR),
            "gateway": str(names.GUEST_GATEWAY),
            "domain": names.DOMAIN,
            "upstream_resolvers": [str(names.INTERNET_IP)],
        },
        "public_ips": [
            {"ip": str(names.ROUTER_PUBLIC_IP), "source_nat": True},
            *({"ip": str(ip)} for ip in names.SPARE_PUBLIC_IPS),
        ],
        "dhcp_hosts": [dhcp_host(g) for g in sorted(guests, key=lambda g: g.index)],
        "egress": {"default_policy": "allow"},
    }
    return parse_document(data)


def dhcp_host(guest: Guest) -> dict[str, str]:
    return {"mac": guest.mac, "ip": str(guest.ip), "hostname": guest.name}


def derive(doc: RouterDocument, **changes: Any) -> RouterDocument:
    """A validated copy of doc with top-level fields replaced and the generation bumped.

    Values may be models or plain JSON data, e.g.
    ``derive(doc, port_forwards=[{"id": "web", ...}])``.
    """
    data = doc.model_dump(mode="json")
    data["generation"] = doc.generation + 1
    data.update({key: _plain(value) for key, value in changes.items()})
    return parse_document(data)


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
