"""Benchmark helper: IPsec tunnel up time, from the PUT of the document to the first packet.

Builds a lab with two networks (``running_lab(networks=2)``), makes router2 a passive
peer, starts an ICMP prober in guest g1 that sends an echo request to h1 (10.1.2.11,
behind router2) every 10 ms, then PUTs router's document with the tunnel and measures
the time until the prober sees the first echo reply through the tunnel. The lab is
removed afterwards. The agents use strongSwan's kernel-libipsec data path (the lab's
kernel has no ESP).

Needs root. Run: ``python benchmarks/_vrs_ipsec.py`` (prints the figure).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliances.lab.testing import running_lab  # noqa: E402

PSK = "bench-ipsec-psk-1"
TIMEOUT_S = 60.0

#: Runs in g1: echo requests to argv[1] every 10 ms; prints "reply" at the first reply.
PROBER = r"""
import os, socket, struct, sys, time
target = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.01)
ident = os.getpid() & 0xFFFF
def checksum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF
print("ready", flush=True)
seq = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    seq = (seq + 1) & 0xFFFF
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + b"skiff"), ident, seq) + b"skiff",
             (target, 0))
    try:
        data, peer = s.recvfrom(2048)
    except (TimeoutError, socket.timeout):
        continue
    ihl = (data[0] & 0x0F) * 4
    reply_id = struct.unpack("!H", data[ihl + 4:ihl + 6])[0]
    if peer[0] == target and data[ihl] == 0 and reply_id == ident:
        print("reply", flush=True)
        sys.exit(0)
sys.exit(1)
"""


def _tunnel(local_gw: str, peer_gw: str, local: str, peer: str, passive: bool) -> dict:
    return {
        "site_to_site": [
            {
                "id": "bench",
                "local_gateway": local_gw,
                "peer_gateway": peer_gw,
                "local_cidrs": [local],
                "peer_cidrs": [peer],
                "psk": PSK,
                "passive": passive,
            }
        ]
    }


async def measure_ipsec_up_ms() -> float:
    """Milliseconds from PUT of the document with the tunnel to the first echo reply
    through it (a lab is built and removed around the measurement)."""
    async with running_lab(guests=1, networks=2, progress=lambda _m: None) as lab:
        await lab.apply(
            lab.derive(
                "router2",
                vpn=_tunnel("203.0.113.20", "203.0.113.10", "10.1.2.0/24", "10.1.1.0/24", True),
            ),
            router="router2",
        )
        doc = lab.derive(
            "router",
            vpn=_tunnel("203.0.113.10", "203.0.113.20", "10.1.1.0/24", "10.1.2.0/24", False),
        )
        prober = await asyncio.create_subprocess_exec(
            *lab.argv_in("g1", [sys.executable, "-c", PROBER, "10.1.2.11", str(TIMEOUT_S)]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert prober.stdout is not None
            line = await asyncio.wait_for(prober.stdout.readline(), 10)
            if line.strip() != b"ready":
                raise RuntimeError(f"prober did not start: {line!r}")
            started = time.perf_counter()
            await lab.apply(doc, router="router")
            line = await asyncio.wait_for(prober.stdout.readline(), TIMEOUT_S + 5)
            done = time.perf_counter()
            if line.strip() != b"reply":
                err = (await prober.stderr.read()).decode() if prober.stderr else ""
                raise RuntimeError(f"no reply through the tunnel within {TIMEOUT_S:.0f} s {err}")
            return (done - started) * 1000
        finally:
            if prober.returncode is None:
                prober.kill()
            await prober.wait()


def main() -> int:
    if os.geteuid() != 0:
        print("vrs_ipsec: needs root (it builds a lab)", file=sys.stderr)
        return 1
    ms = asyncio.run(measure_ipsec_up_ms())
    print(f"IPsec tunnel up (PUT to first echo reply through it): {ms:.0f} ms")
    print(f"RESULT vrs_ipsec ipsec_up_ms={ms:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
