"""Router documents for unit tests: a valid base to mutate, and error helpers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from appliances.common.errors import DocumentError, FieldError
from appliances.router.verify import parse_document


def minimal() -> dict[str, Any]:
    """The smallest valid document: a guest interface and its network."""
    return {
        "router_id": "r-1",
        "generation": 1,
        "interfaces": [{"role": "guest", "name": "eth1", "addresses": ["10.1.1.1/24"]}],
        "guest_network": {
            "cidr": "10.1.1.0/24",
            "gateway": "10.1.1.1",
            "domain": "cloud.internal",
        },
    }


def full() -> dict[str, Any]:
    """A valid document using every section once; tests break one thing at a time."""
    return {
        "router_id": "r-1",
        "generation": 7,
        "interfaces": [
            {"role": "control", "name": "eth0", "mac": "0e:00:a9:fe:00:02",
             "addresses": ["169.254.0.2/16"]},
            {"role": "guest", "name": "eth1", "mac": "02:00:0a:01:01:01",
             "addresses": ["10.1.1.1/24"]},
            {"role": "public", "name": "eth2", "mac": "1e:00:c0:00:02:0a",
             "addresses": ["203.0.113.10/24"], "gateway": "203.0.113.1"},
        ],
        "guest_network": {
            "cidr": "10.1.1.0/24",
            "gateway": "10.1.1.1",
            "domain": "cloud.internal",
            "dns_servers": ["10.1.1.1"],
            "upstream_resolvers": ["9.9.9.9"],
            "classless_routes": [{"destination": "192.168.50.0/24", "gateway": "10.1.1.254"}],
            "lease_seconds": 3600,
        },
        "public_ips": [
            {"ip": "203.0.113.10", "source_nat": True},
            {"ip": "203.0.113.11"},
            {"ip": "203.0.113.12"},
        ],
        "dhcp_hosts": [
            {"mac": "02:00:00:00:00:10", "ip": "10.1.1.10", "hostname": "web1"},
            {"mac": "02:00:00:00:00:11", "ip": "10.1.1.11", "hostname": "web2",
             "default_gateway": False},
        ],
        "dns_records": [{"name": "www.cloud.internal", "ip": "10.1.1.10"}],
        "ingress_rules": [
            {"id": "in-ssh", "public_ip": "203.0.113.10", "protocol": "tcp", "start_port": 22,
             "source_cidrs": ["192.0.2.0/24"]},
            {"id": "in-ping", "public_ip": "203.0.113.10", "protocol": "icmp", "icmp_type": 8},
        ],
        "egress": {
            "default_policy": "deny",
            "rules": [
                {"id": "eg-web", "protocol": "tcp", "start_port": 80, "end_port": 443},
            ],
        },
        "port_forwards": [
            {"id": "pf-ssh", "public_ip": "203.0.113.11", "protocol": "tcp",
             "public_start": 2222, "guest_ip": "10.1.1.10", "guest_start": 22},
        ],
        "static_nats": [{"public_ip": "203.0.113.12", "guest_ip": "10.1.1.11"}],
        "static_routes": [{"cidr": "172.31.0.0/16", "gateway": "10.1.1.254"}],
    }


def ingress(rule_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "public_ip": "203.0.113.10", "protocol": "tcp", **fields}


def egress(rule_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "protocol": "tcp", **fields}


def forward(rule_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": rule_id, "public_ip": "203.0.113.11", "protocol": "tcp",
            "public_start": 80, "guest_ip": "10.1.1.10", "guest_start": 80}
    return {**base, **fields}


def errors_of(data: dict[str, Any]) -> list[FieldError]:
    """Every FieldError parse_document reports for ``data`` (fails if it is valid)."""
    with pytest.raises(DocumentError) as info:
        parse_document(copy.deepcopy(data))
    assert info.value.errors, "a DocumentError must name at least one problem"
    return info.value.errors


def error_at(data: dict[str, Any], loc: str, *words: str) -> FieldError:
    """The one error at ``loc``, whose message must contain every word in ``words``."""
    errors = errors_of(data)
    found = [e for e in errors if e.loc == loc]
    assert found, f"no error at {loc!r}; got {[(e.loc, e.msg) for e in errors]}"
    for word in words:
        assert any(word in e.msg for e in found), (
            f"{word!r} not in the message(s) at {loc}: {[e.msg for e in found]}"
        )
    return found[0]


def only_error_at(data: dict[str, Any], loc: str, *words: str) -> FieldError:
    """As error_at, and no other location is blamed."""
    err = error_at(data, loc, *words)
    locs = {e.loc for e in errors_of(data)}
    assert locs == {loc}, f"expected only {loc}, got {sorted(locs)}"
    return err
