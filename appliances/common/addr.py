"""Arithmetic on IPv4 addresses and networks kept as canonical strings.

Documents hold addresses as strings checked by a regex in pydantic's Rust core
(fast enough for tens of thousands of entries); code that needs containment or
overlap asks here, where the conversions are cached.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=262_144)
def ip_int(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


@lru_cache(maxsize=65_536)
def net_range(cidr: str) -> tuple[int, int]:
    """First and last address of a network, as integers."""
    net = ipaddress.IPv4Network(cidr)
    return int(net.network_address), int(net.broadcast_address)


def contains(cidr: str, address: str) -> bool:
    first, last = net_range(cidr)
    return first <= ip_int(address) <= last


def overlaps(a: str, b: str) -> bool:
    a_first, a_last = net_range(a)
    b_first, b_last = net_range(b)
    return a_first <= b_last and b_first <= a_last


def subnet_of(inner: str, outer: str) -> bool:
    i_first, i_last = net_range(inner)
    o_first, o_last = net_range(outer)
    return o_first <= i_first and i_last <= o_last
