"""Benchmark ``vr_services``: the virtual router's services under load, in a lab.

Builds a lab (router agent, internet, four guests with their httpd) and measures:

* **lb_apply_ms**: PUT of a document with 1,000 load-balancer rules of 4 members
  each (HAProxy starts with 1,000 listeners and 4,000 servers), median of 3, beside
  the baseline ``haproxy -c`` of the same rendered file (the checker alone) and the
  time HAProxy itself needs to start on it. Then one rule added on top (a reload)
  and one member's weight changed (the runtime API, no reload).
* **reload_lost**: requests that got no answer while the agent applied 20
  documents that each reload HAProxy, under a continuous client loop (4 workers,
  a new connection per request), beside the same loop without reloads.
* **ipsec_up_ms** (``_vrs_ipsec.py``): two lab networks, from the PUT of the
  document with the tunnel to the first echo reply through it (libipsec data path).
* **failover_gap_ms** (``_vrs_failover.py``): a redundant pair with 1 s adverts, the
  longest gap in a guest's 100 ms probe stream through the shared gateway when the
  primary is stopped (its agent stops, then its cables are pulled); beside it the
  gap when the primary vanishes without a word (cables pulled only), whose floor is
  VRRP's master-down interval (3 adverts plus skew).

Needs root. Run: ``.venv/bin/python benchmarks/vr_services.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import Samples, fmt, progress, result_line  # noqa: E402
from _vrs_failover import measure_failover_gap_ms  # noqa: E402
from _vrs_ipsec import measure_ipsec_up_ms  # noqa: E402

from appliances.lab.baseline import derive  # noqa: E402
from appliances.lab.lab import Lab  # noqa: E402
from appliances.lab.testing import running_lab  # noqa: E402

LB_IP = "203.0.113.11"
RULES = 1_000
MEMBERS = ("10.1.1.11", "10.1.1.12", "10.1.1.13", "10.1.1.14")
RELOADS = 20


def lb_rules(count: int, first_port: int = 10_000, prefix: str = "lb") -> list[dict]:
    """``count`` rules with four members each; slow health checks keep 4,000 servers
    from flooding the lab while it is measured."""
    return [
        {
            "id": f"{prefix}{k}",
            "public_ip": LB_IP,
            "public_port": first_port + k,
            "private_port": 80,
            "health_check": {"interval_s": 30, "response_timeout_s": 2},
            "members": [{"id": f"m{j}", "ip": ip} for j, ip in enumerate(MEMBERS)],
        }
        for k in range(count)
    ]


async def put(lab: Lab, **changes) -> tuple[float, dict]:
    doc = derive(lab.baseline.model_copy(update={"generation": lab.document.generation}), **changes)
    started = time.perf_counter()
    reply = await lab.apply(doc)
    return (time.perf_counter() - started) * 1000, reply.body


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr[:500]}")
    return (time.perf_counter() - started) * 1000


async def bare_haproxy_start(lab: Lab, config: Path) -> float:
    """HAProxy started by hand on the same file in the router (its own sockets):
    time until it says it has loaded."""
    cfg = config.read_text().replace(
        str(config.parent / "haproxy.sock"), str(config.parent / "bench.sock")
    )
    cfg = cfg.replace(LB_IP, "127.0.0.1")  # do not fight the agent's HAProxy for the ports
    bench = config.parent / "bench.cfg"
    bench.write_text(cfg)
    argv = lab.argv_in("router", ["haproxy", "-W", "-db", "-f", str(bench)])
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            async for line in proc.stdout:
                if b"Loading success" in line:
                    return (time.perf_counter() - started) * 1000
    finally:
        proc.terminate()
        await proc.wait()
        bench.unlink(missing_ok=True)
    raise RuntimeError("the bare HAProxy did not start")


async def load_during(lab: Lab, seconds: float, action=None) -> dict:
    argv = lab.argv_in(
        "internet",
        [
            sys.executable,
            "-m",
            "appliances.lab.httpload",
            f"http://{LB_IP}/",
            "--seconds",
            str(seconds),
            "--workers",
            "4",
        ],
    )
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    if action is not None:
        await asyncio.sleep(0.5)
        await action()
        proc.terminate()
    out, _ = await proc.communicate()
    return json.loads(out)


async def lb_figures(lab: Lab) -> dict:
    lab.baseline = lab.document  # type: ignore[attr-defined]
    rules = lb_rules(RULES)
    applies = Samples()
    for _ in range(3):
        await put(lab, load_balancers=[])
        ms, body = await put(lab, load_balancers=rules)
        assert "start" in body["services"].get("haproxy", ""), body
        applies.add(ms)
    config = lab.state_dir / "agent" / "haproxy" / "haproxy.cfg"
    check = Samples()
    for _ in range(3):
        check.add(timed(lab.argv_in("router", ["haproxy", "-c", "-q", "-f", str(config)])))
    bare = Samples()
    for _ in range(3):
        bare.add(await bare_haproxy_start(lab, config))
    add_one, _ = await put(
        lab, load_balancers=[*rules, *lb_rules(1, first_port=20_000, prefix="new")]
    )
    heavier = [dict(r) for r in [*rules, *lb_rules(1, first_port=20_000, prefix="new")]]
    heavier[0] = {
        **heavier[0],
        "members": [{**heavier[0]["members"][0], "weight": 9}, *heavier[0]["members"][1:]],
    }
    weight_ms, body = await put(lab, load_balancers=heavier)
    assert "runtime API" in body["services"]["haproxy"], body
    return {"apply": applies, "check": check, "bare": bare, "add_one": add_one, "weight": weight_ms}


async def reload_figures(lab: Lab) -> tuple[dict, dict]:
    web = {
        "id": "web",
        "public_ip": LB_IP,
        "public_port": 80,
        "private_port": 80,
        "members": [{"id": "g1", "ip": MEMBERS[0]}, {"id": "g2", "ip": MEMBERS[1]}],
    }
    await put(lab, load_balancers=[web])
    quiet = await load_during(lab, 5.0)

    async def reloads() -> None:
        for k in range(RELOADS):
            extra = [{**web, "id": "extra", "public_port": 81 + k}]
            _ms, body = await put(lab, load_balancers=[web, *extra])
            assert "reload" in body["services"]["haproxy"], body
            await asyncio.sleep(0.1)

    busy = await load_during(lab, 120.0, reloads)
    return quiet, busy


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    async with running_lab(guests=len(MEMBERS), progress=progress) as lab:
        progress(f"applying {RULES} LB rules x {len(MEMBERS)} members (3 times)")
        lb = await lb_figures(lab)
        progress(f"{RELOADS} reloads under a continuous client loop")
        quiet, busy = await reload_figures(lab)
    progress("IPsec tunnel up time (two lab networks)")
    ipsec = await measure_ipsec_up_ms()
    progress("failover of a redundant pair: primary stopped, then primary vanished")
    failover = await measure_failover_gap_ms("stop")
    vanished = await measure_failover_gap_ms("crash")

    print(f"{'measurement':52} {'skiff':>12} {'baseline':>12}")
    print(
        f"{'apply 1,000 LB rules x 4 members (median/min ms)':52} "
        f"{lb['apply'].brief():>12} {lb['check'].brief():>12}  haproxy -c alone"
    )
    print(f"{'':52} {'':>12} {lb['bare'].brief():>12}  bare HAProxy start")
    print(f"{'add one rule to 1,000 (reload, ms)':52} {fmt(lb['add_one']):>12}")
    print(f"{'change one member weight (runtime API, ms)':52} {fmt(lb['weight']):>12}")
    print(
        f"{'requests lost, 20 reloads under load':52} "
        f"{busy['failed']:>5} of {busy['requests']:<6} {quiet['failed']:>5} of "
        f"{quiet['requests']:<6} same loop, no reloads"
    )
    if busy["errors"]:
        print(f"  errors: {busy['errors']}")
    print(f"{'IPsec: document to first packet through (ms)':52} {fmt(ipsec):>12}")
    print(
        f"{'failover, primary stopped: longest probe gap (ms)':52} {fmt(failover):>12}"
        "  target < 3000"
    )
    print(
        f"{'failover, primary vanished: longest probe gap (ms)':52} {fmt(vanished):>12}"
        "  VRRP master-down floor: 3 adverts + skew = 3,610 ms"
    )
    print(
        result_line(
            "vr_services",
            [
                ("lb_rules", RULES),
                ("lb_apply_ms", lb["apply"].median),
                ("reload_lost", busy["failed"]),
                ("ipsec_up_ms", ipsec),
                ("failover_gap_ms", failover),
            ],
        )
    )
    return 0 if busy["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
