"""Benchmark helper: failover outage of a redundant router pair (issue 4, vr_services).

Builds a lab with the pair "router" + "rb" (1 s VRRP adverts), lets guest g1 fetch
http://203.0.113.1/ through the shared gateway every 100 ms (each probe a new TCP
connection through source NAT, answered within 0.5 s or counted as lost), stops the
primary and reports the longest gap between two successful probes. Target: under
3 s (CloudStack users report 5-7 minutes).

``mode="stop"`` shuts the primary down: its agent stops (SIGTERM: keepalived releases
the VIPs and sends a priority-0 advert, as when an operator stops a router), then its
guest and public cables are pulled (the machine is gone). ``mode="crash"`` only pulls
the cables, so the backup notices nothing but the missing adverts: VRRP's master-down
interval (3 advert intervals plus a priority skew, 3.6 s with 1 s adverts and priority
100) bounds that gap from below.

Needs root. Run: ``.venv/bin/python benchmarks/_vrs_failover.py [--mode stop|crash]``;
the last line is ``RESULT vrs_failover failover_gap_ms=.. mode=..``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import fmt, progress, result_line  # noqa: E402

from appliances.lab import netns, pair  # noqa: E402
from appliances.lab.probe import longest_gap_ms  # noqa: E402
from appliances.lab.testing import running_lab  # noqa: E402

URL = "http://203.0.113.1/"
INTERVAL_S = 0.1
BEFORE_S = 3.0  # probes before the primary goes
AFTER_S = 6.0  # probes after the backup became primary
STATE_TIMEOUT_S = 30.0


async def measure_failover_gap_ms(mode: str = "stop") -> float:
    """The longest gap (ms) in a 100 ms probe stream from a guest through the VIP when
    the primary of a redundant pair is stopped (``stop``) or cut off (``crash``)."""
    if mode not in ("stop", "crash"):
        raise ValueError(f"mode must be stop or crash, not {mode!r}")
    async with running_lab(guests=1, redundant=True, progress=progress) as lab:
        await pair.apply_pair(lab, advert_interval_s=1)
        await pair.wait_state(lab, "router", "PRIMARY", STATE_TIMEOUT_S)
        await pair.wait_state(lab, "rb", "BACKUP", STATE_TIMEOUT_S)
        duration = BEFORE_S + STATE_TIMEOUT_S + AFTER_S
        log = lab.log("g1-probe")
        pid = lab.spawn_in(
            "g1",
            "g1-probe",
            [
                sys.executable,
                "-m",
                "appliances.lab.probe",
                "--url",
                URL,
                "--interval",
                str(INTERVAL_S),
                "--duration",
                str(duration),
            ],
        )
        try:
            await asyncio.sleep(BEFORE_S)
            progress(f"{mode}: taking the primary away")
            if mode == "stop":
                await pair.shut_down(lab, "router")
            else:
                await pair.take_down(lab, "router")
            await pair.wait_state(lab, "rb", "PRIMARY", STATE_TIMEOUT_S)
            progress("rb is PRIMARY")
            await asyncio.sleep(AFTER_S)
        finally:
            await netns.kill_pids(lambda: [pid] if netns.pid_alive(pid) else [])
        lines = log.read_text().splitlines()
        ok = sum(1 for line in lines if line.startswith("ok "))
        progress(f"{ok} of {len(lines)} probes answered")
        return longest_gap_ms(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["stop", "crash"], default="stop")
    args = p.parse_args(argv)
    gap = asyncio.run(measure_failover_gap_ms(args.mode))
    print(f"failover ({args.mode}) longest probe gap: {fmt(gap)} ms (target < 3000 ms)")
    print(result_line("vrs_failover", [("failover_gap_ms", gap), ("mode", args.mode)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
