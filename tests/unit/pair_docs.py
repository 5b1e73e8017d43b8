"""Documents of a redundant router pair for tests."""

from __future__ import annotations


def pair_document(**redundancy) -> dict:
    """Router A of a pair: guest gateway 10.1.1.1, public 203.0.113.10 with a second
    public subnet and two more public IPs, sync over the guest network."""
    return {
        "router_id": "r-pair",
        "generation": 3,
        "interfaces": [
            {"role": "guest", "name": "eth0", "addresses": ["10.1.1.1/24"]},
            {"role": "control", "name": "eth1", "addresses": ["169.254.3.2/24"]},
            {
                "role": "public",
                "name": "eth2",
                "addresses": ["203.0.113.10/24", "198.51.100.1/28"],
                "gateway": "203.0.113.1",
            },
        ],
        "guest_network": {"cidr": "10.1.1.0/24", "gateway": "10.1.1.1", "domain": "pair.test"},
        "public_ips": [
            {"ip": "203.0.113.10", "source_nat": True},
            {"ip": "203.0.113.11"},
            {"ip": "203.0.113.12"},
        ],
        "redundancy": {
            "vrid": 51,
            "priority": 150,
            "advert_interval_s": 1,
            "password": "s3cr#t!~",
            "sync_interface": "eth0",
            "peer_ip": "10.1.1.3",
            "own_addresses": [
                {"interface": "eth0", "address": "10.1.1.2/24"},
                {"interface": "eth2", "address": "203.0.113.20/24"},
            ],
            **redundancy,
        },
    }
