"""Which MAC address the router's neighbour table holds for a guest address.

The agent runs inside the router's network namespace, so ``/proc/net/arp`` (which
is per namespace) is the router's own IPv4 neighbour table. Reading it costs no
process per request, unlike ``ip neigh``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

ARP_TABLE = Path("/proc/net/arp")
_ATF_COM = 0x2  # the entry holds a resolved hardware address


class NeighbourLookup(Protocol):
    def mac_of(self, ip: str, device: str) -> str | None:
        """The resolved MAC of ``ip`` on ``device`` (lower case), or None."""


class ArpTable:
    """Neighbour lookup from the kernel's ARP table of this network namespace."""

    def __init__(self, path: Path = ARP_TABLE):
        self.path = path

    def mac_of(self, ip: str, device: str) -> str | None:
        try:
            text = self.path.read_text()
        except OSError:
            return None
        return parse_arp(text, ip, device)


def parse_arp(text: str, ip: str, device: str) -> str | None:
    """The MAC of a complete entry for ``ip`` on ``device`` in /proc/net/arp text."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6 or fields[0] != ip or fields[5] != device:
            continue
        try:
            flags = int(fields[2], 16)
        except ValueError:
            continue
        if flags & _ATF_COM and fields[3] != "00:00:00:00:00:00":
            return fields[3].lower()
    return None
