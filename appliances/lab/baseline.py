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
                      guests: Iterable[Guest] = (), generation: int = 1,
                      router: str = "router") -> RouterDocument:
    """Guest 10.1.1.0/24 behind 203.0.113.10 (source NAT), egress allowed, one DHCP host
    per guest; 203.0.113.11 and .12 are spare public IPs for tests.

    ``router`` picks the lab router whose MACs and addresses are used: router2 serves
    10.1.2.0/24 behind 203.0.113.20 (spares .21, .22); rb has router's addresses with
    its own MACs (the document of a redundant pair is the redundancy section's business).
    """
    spec = names.ROUTERS[router]
    net = names.NETWORKS[spec.network]
    data = {
        "router_id": router_id,
        "generation": generation,
        "interfaces": [
            {"role": "guest", "name": "eth0", "mac": spec.macs["eth0"],
             "addresses": [f"{net.gateway}/{net.cidr.prefixlen}"]},
            {"role": "control", "name": "eth1", "mac": spec.macs["eth1"],
             "addresses": [str(control_ip)]},
            {"role": "public", "name": "eth2", "mac": spec.macs["eth2"],
             "addresses": [f"{spec.public_ip}/{names.PUBLIC_CIDR.prefixlen}"],
             "gateway": str(names.INTERNET_IP)},
        ],
        "guest_network": {
            "cidr": str(net.cidr),
            "gateway": str(net.gateway),
            "domain": names.DOMAIN,
            "upstream_resolvers": [str(names.INTERNET_IP)],
        },
        "public_ips": [
            {"ip": str(spec.public_ip), "source_nat": True},
            *({"ip": str(ip)} for ip in spec.spare_public_ips),
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
