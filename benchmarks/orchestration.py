"""Benchmark ``orchestration``: the management server driving routers and instances.

A live management server (SQLite in a temporary home) builds a zone in a box on
the netns host ``bench`` through its own API with the ``cs`` client (the e2e
tests' ``Cloud`` helper, tests/e2e/orchestration.py), then measures:

* **pf_to_traffic**: ``--rules`` port forwards created one after another on one
  public address (alternating between two instances); each from the
  createPortForwardingRule call (the async job included, the client polling its
  result every 50 ms) to the first good HTTP answer through the forward, fetched
  by curl from the lab's Internet (``--max-time 0.3``, back to back). Beside it:
  the job alone, a plain curl through an existing forward, and the same document
  pushed again by the orchestrator without API or job (``sync.converge``).
* **networks**: ``--networks`` isolated networks with ``--instances`` instances
  each, all created at once (createNetwork, then the deployVirtualMachine calls of
  a network together); total time until every deploy job has answered; router
  ready time (from the network's first deploy call to the router started, its
  agent healthy and its whole document pushed) p50/p99, beside one network alone
  in the same run; memory per router (VmRSS of every process in its namespace).
* **recover**: a router destroyed behind the server's back (every process killed,
  namespace deleted); from then to the first good answer through one of its
  forwards again (the reconcile loop notices and recreates it: ``--recoveries``
  times, the median is reported, the worst beside it).

Needs root. Run: ``.venv/bin/python benchmarks/orchestration.py`` (about
two minutes; ``--rules 5 --networks 3 --recoveries 1`` for a quick look). Everything
it builds is lab ``bench`` (``skiff lab down --name bench`` removes what a killed run
left; a new run does that first).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import requests  # noqa: E402
from _common import Samples, fmt, progress, result_line  # noqa: E402
from cs.client import CloudStack  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

from appliances.lab import netns  # noqa: E402
from mgmt.db.models.compute import Router, VmInstance  # noqa: E402
from mgmt.orchestration import routers, sync  # noqa: E402


def _e2e_helper():
    """tests/e2e/orchestration.py (the e2e tests' Cloud), loaded under a name of its own:
    this file has the same name."""
    spec = importlib.util.spec_from_file_location(
        "e2e_orchestration", REPO / "tests" / "e2e" / "orchestration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Cloud = _e2e_helper().Cloud
LAB = "bench"
PROBE_TIMEOUT = 0.3  # curl --max-time while waiting for a forward: below the SYN retry (1 s)
FIRST_PORT = 20_000
#: Job polling of the concurrent phase's client: 100+ jobs polled every 50 ms would
#: be thousands of requests a second against the server's own rate limit.
BULK_POLL_INTERVAL = 0.5
#: Refuse the network phase when it would take more than this share of free memory.
MEMORY_SHARE = 0.7


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


class RouterClock:
    """When each router start began and ended, by router name (the server runs in this
    process: ``routers.start`` is wrapped; networks.implement and routers.recreate call
    it)."""

    def __init__(self) -> None:
        self.began: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.ids: dict[str, int] = {}
        self._original = routers.start

    def install(self) -> None:
        original = self._original

        async def timed(orch, router_id: int, avoid: frozenset[int] = frozenset()) -> None:
            async with orch.db.sessions() as session:
                router = await session.get_one(Router, router_id)
                name = (await session.get_one(VmInstance, router.vm_id)).name
            self.ids[name] = router_id
            self.began[name] = time.perf_counter()
            await original(orch, router_id, avoid)
            self.ready[name] = time.perf_counter()

        routers.start = timed  # type: ignore[assignment]

    def uninstall(self) -> None:
        routers.start = self._original  # type: ignore[assignment]


async def good_answer(c: Cloud, url: str, expect: str, limit_s: float = 60.0) -> tuple[float, int]:
    """Poll url from the lab's Internet until the instance ``expect`` answers: the
    perf_counter time of that answer and the number of failed probes before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    failed = 0
    while loop.time() < deadline:
        body = await c.curl(url, timeout=PROBE_TIMEOUT)
        if body and body.split()[0] == expect:
            return time.perf_counter(), failed
        failed += 1
    raise RuntimeError(f"{url}: no answer from {expect} within {limit_s:.0f} s")


async def ns_rss_kib(ns: str) -> int:
    """Sum of VmRSS of the processes in a namespace (KiB)."""
    res = await netns.run(["ip", "netns", "pids", ns], check=False)
    total = 0
    for pid in res.stdout.split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) if match else 0
    return total


def mem_available_kib() -> int:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) if match else 0


async def router_of(c: Cloud, network: dict) -> dict:
    [router] = (await c.call("listRouters", networkid=network["id"]))["router"]
    return router


async def make_room(c: Cloud, networks: int, instances: int) -> tuple[float, float]:
    """Raise the zone's over-provisioning factors until ``networks`` networks (and the
    pf network) fit, as an operator packing a lab host would: the allocator books a
    router 500 MHz and 256 MiB and an instance its offering, far more than a namespace
    uses (what they use is measured). Returns the (cpu, memory) factors set."""
    assert c.zone is not None
    [host] = (await c.call("listHosts", id=c.zone.host["id"]))["host"]
    offering, count = c.zone.offering, networks + 1
    cpu_need = count * (
        routers.ROUTER_CPU_MHZ + instances * offering["cpunumber"] * offering["cpuspeed"]
    )
    mem_need = count * (routers.ROUTER_MEMORY_MIB + instances * offering["memory"]) * 2**20
    factors = (
        max(1.0, math.ceil(1.2 * cpu_need / (host["cpunumber"] * host["cpuspeed"]))),
        max(1.0, math.ceil(1.2 * mem_need / host["memorytotal"])),
    )
    for name, value in zip(
        ("cpu.overprovisioning.factor", "mem.overprovisioning.factor"), factors, strict=True
    ):
        await c.call("updateConfiguration", name=name, value=str(value), zoneid=c.zone.zone["id"])
    return factors


# -- port forwards -------------------------------------------------------------------------


async def pf_phase(c: Cloud, rules: int, clock: RouterClock) -> dict:
    progress("network 'pf' with two instances (one network alone: the baseline router start)")
    network = await c.network("pf")
    started = time.perf_counter()
    vms = await asyncio.gather(c.deploy(network, "pf1"), c.deploy(network, "pf2"))
    router = await router_of(c, network)
    rid = router["name"]
    alone_ms = (clock.ready[rid] - started) * 1000
    ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
    address = ip["ipaddress"]
    total, job, failed_probes = Samples(), Samples(), 0
    progress(f"{rules} port forwards on {address}, one after another")
    for k in range(rules):
        vm = vms[k % 2]
        port = FIRST_PORT + k
        t0 = time.perf_counter()
        await c.call(
            "createPortForwardingRule",
            ipaddressid=ip["id"],
            protocol="tcp",
            publicport=port,
            privateport=80,
            virtualmachineid=vm["id"],
        )
        t_job = time.perf_counter()
        t_ok, failed = await good_answer(c, f"http://{address}:{port}/", vm["name"])
        total.add((t_ok - t0) * 1000)
        job.add((t_job - t0) * 1000)
        failed_probes += failed
        if (k + 1) % 10 == 0 or k + 1 == rules:
            progress(f"  {k + 1}/{rules} forwards: p50 {fmt(total.median)} ms so far")
    first_url = f"http://{address}:{FIRST_PORT}/"
    curl = Samples()
    for _ in range(20):
        t0 = time.perf_counter()
        body = await c.curl(first_url)
        assert body and body.split()[0] == vms[0]["name"], body
        curl.add((time.perf_counter() - t0) * 1000)
    push = Samples()
    orch = c.server.orchestrator  # type: ignore[union-attr]
    for _ in range(5):
        t0 = time.perf_counter()
        await sync.converge(orch, clock.ids[rid], force=True)
        push.add((time.perf_counter() - t0) * 1000)
    return {
        "network": network,
        "vms": vms,
        "url": first_url,
        "total": total,
        "job": job,
        "curl": curl,
        "push": push,
        "alone_ms": alone_ms,
        "failed_probes": failed_probes,
    }


# -- many networks at once -----------------------------------------------------------------


async def fits(c: Cloud, pf: dict, networks: int, instances: int) -> tuple[bool, str]:
    """Whether ``networks`` more routers and their instances fit in free memory,
    judged from the pf network's router and instance."""
    router = await router_of(c, pf["network"])
    per_router = await ns_rss_kib(c.ns(router["name"]))
    per_instance = await ns_rss_kib(c.ns(pf["vms"][0]["instancename"]))
    need = networks * (per_router + instances * per_instance)
    free = mem_available_kib()
    text = (
        f"{networks} x (router {per_router // 1024} MiB + {instances} x instance "
        f"{per_instance // 1024} MiB) = {need // 1024} MiB; available {free // 1024} MiB"
    )
    return need < MEMORY_SHARE * free, text


async def networks_phase(c: Cloud, count: int, instances: int, clock: RouterClock) -> dict:
    assert c.zone is not None and c.api is not None
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=count * instances + 16))
    bulk = CloudStack(
        c.api.endpoint,
        key=c.api.key,
        secret=c.api.secret,
        fetch_result=True,
        poll_interval=BULK_POLL_INTERVAL,
        timeout=120,
        job_timeout=900,
        session=session,
    )

    async def call(command: str, /, **params) -> dict:
        return await asyncio.to_thread(getattr(bulk, command), **params)

    first_deploy: dict[str, float] = {}
    done = {"networks": 0, "instances": 0}

    async def one(k: int) -> dict:
        name = f"bench{k:03d}"
        network = (
            await call(
                "createNetwork",
                name=name,
                displaytext=name,
                zoneid=c.zone.zone["id"],
                networkofferingid=c.zone.network_offering["id"],
            )
        )["network"]
        done["networks"] += 1
        first_deploy[network["id"]] = time.perf_counter()
        vms = await asyncio.gather(
            *(
                call(
                    "deployVirtualMachine",
                    zoneid=c.zone.zone["id"],
                    serviceofferingid=c.zone.offering["id"],
                    templateid=c.zone.template["id"],
                    networkids=network["id"],
                    name=f"{name}-vm{j}",
                )
                for j in range(instances)
            )
        )
        done["instances"] += instances
        return {"network": network, "vms": [v["virtualmachine"] for v in vms]}

    async def report() -> None:
        while True:
            await asyncio.sleep(10)
            progress(
                f"  networks {done['networks']}/{count}, routers started "
                f"{len(set(clock.ready) - before)}/{count}, instances running "
                f"{done['instances']}/{count * instances}"
            )

    progress(f"{count} networks x {instances} instances, all at once")
    before = set(clock.ready)
    reporter = asyncio.create_task(report())
    t0 = time.perf_counter()
    try:
        made = await asyncio.gather(*(one(k) for k in range(count)))
    finally:
        reporter.cancel()
    total_s = time.perf_counter() - t0
    progress(f"  every deploy job answered after {total_s:.1f} s; waiting for the leases")
    leased = await leases(c, [vm for m in made for vm in m["vms"]])
    leases_s = time.perf_counter() - t0
    ready, start_ms, rss = [], [], []
    for m in made:
        router = await router_of(c, m["network"])
        rid = router["name"]
        assert router["state"] == "Running", router
        ready.append((clock.ready[rid] - first_deploy[m["network"]["id"]]) * 1000)
        start_ms.append((clock.ready[rid] - clock.began[rid]) * 1000)
        rss.append(await ns_rss_kib(c.ns(router["name"])) / 1024)
    instance_rss = [
        await ns_rss_kib(c.ns(vm["instancename"])) / 1024 for m in made[:5] for vm in m["vms"]
    ]
    return {
        "made": made,
        "total_s": total_s,
        "leases_s": leases_s,
        "leased": leased,
        "ready": ready,
        "start": start_ms,
        "rss": rss,
        "instance_rss": instance_rss,
    }


async def leases(c: Cloud, vms: list[dict], limit_s: float = 120.0) -> int:
    """Wait (bounded) until every instance holds the DHCP lease of its own address;
    returns how many do."""
    driver = c.driver()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    waiting = {vm["instancename"]: vm["nic"][0]["ipaddress"] for vm in vms}
    while waiting and loop.time() < deadline:
        for name, ip in list(waiting.items()):
            if (await driver.lease(name)).get("ip") == ip:
                del waiting[name]
        if waiting:
            await asyncio.sleep(0.5)
    return len(vms) - len(waiting)


# -- recovery ------------------------------------------------------------------------------


async def recover_phase(c: Cloud, pf: dict, times: int, clock: RouterClock) -> dict:
    samples, detect, restart, kill = [], [], [], []
    for k in range(times):
        before = await router_of(c, pf["network"])
        t_kill = time.perf_counter()
        await c.driver().runtime.stop(before["name"])  # every process killed, ns deleted
        t0 = time.perf_counter()
        t_ok, failed = await good_answer(c, pf["url"], pf["vms"][0]["name"], limit_s=90)
        if failed == 0:
            raise RuntimeError("traffic went on through a destroyed router: wrong router?")
        after = await router_of(c, pf["network"])
        rid = after["name"]
        while rid not in clock.ready:  # traffic can flow just before start() returns
            await asyncio.sleep(0.01)
        assert after["name"] != before["name"], "the router was not recreated"
        samples.append(t_ok - t0)
        kill.append(t0 - t_kill)
        detect.append(clock.began[rid] - t0)
        restart.append(clock.ready[rid] - clock.began[rid])
        progress(
            f"  recovery {k + 1}/{times}: {samples[-1]:.1f} s ({before['name']} -> {after['name']})"
        )
    return {"samples": samples, "kill": kill, "detect": detect, "restart": restart}


# -- main ----------------------------------------------------------------------------------


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--networks", type=int, default=50)
    parser.add_argument("--instances", type=int, default=2, help="per network")
    parser.add_argument("--recoveries", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.rules <= 1000 or not 0 <= args.networks <= 80:
        parser.error("--rules 1..1000, --networks 0..80 (the zone has 90 public addresses)")
    if args.instances < 1 or args.recoveries < 1:
        parser.error("--instances and --recoveries must be at least 1")
    loop = asyncio.get_running_loop()
    # Every concurrent API call holds a thread for its job; the default pool has 6.
    loop.set_default_executor(ThreadPoolExecutor(args.networks * args.instances + 16))
    clock = RouterClock()
    clock.install()
    with tempfile.TemporaryDirectory(prefix="skiff-bench-orch-") as home:
        c = Cloud(LAB, Path(home))
        try:
            progress(f"management server and a zone on netns host {LAB}")
            await c.start()
            room = await make_room(c, args.networks, args.instances)
            progress(f"zone over-provisioning: CPU x{room[0]:.0f}, memory x{room[1]:.0f}")
            pf = await pf_phase(c, args.rules, clock)
            nets = None
            if args.networks:
                ok, text = await fits(c, pf, args.networks, args.instances)
                progress(f"memory: {text}")
                if not ok:
                    print(f"refusing the network phase: {text}", file=sys.stderr)
                    return 1
                nets = await networks_phase(c, args.networks, args.instances, clock)
            progress(f"recovery: the pf router destroyed {args.recoveries} times")
            rec = await recover_phase(c, pf, args.recoveries, clock)
        finally:
            clock.uninstall()
            progress(f"cleaning up (skiff lab down --name {LAB})")
            await c.stop()
    report(args, pf, nets, rec, room)
    return 0


def report(args, pf: dict, nets: dict | None, rec: dict, room: tuple[float, float]) -> None:
    total = pf["total"].values
    print(f"{'measurement':56} {'skiff':>14} {'baseline':>14}")
    print(
        f"{f'forward created -> first answer through it, {args.rules} rules (p50/p99 ms)':56} "
        f"{fmt(pct(total, 0.5)) + '/' + fmt(pct(total, 0.99)):>14} "
        f"{pf['curl'].brief():>14}  plain curl through a forward (median/min)"
    )
    print(
        f"{'  of which the job (API call to job result, p50/p99 ms)':56} "
        f"{fmt(pct(pf['job'].values, 0.5)) + '/' + fmt(pct(pf['job'].values, 0.99)):>14} "
        f"{pf['push'].brief():>14}  same document pushed again, no API/job"
    )
    print(f"{'  failed probes before the first answer (all rules)':56} {pf['failed_probes']:>14}")
    if nets is not None:
        n = args.networks
        print(
            f"{f'{n} networks x {args.instances} instances at once: all deployed (s)':56} "
            f"{nets['total_s']:>14.1f}"
        )
        print(
            f"{'  ... and every instance leased its address (s)':56} "
            f"{nets['leases_s']:>14.1f}  {nets['leased']} of {n * args.instances} leased"
        )
        ready = nets["ready"]
        print(
            f"{'router ready from first deploy call (p50/p99 ms)':56} "
            f"{fmt(pct(ready, 0.5)) + '/' + fmt(pct(ready, 0.99)):>14} "
            f"{fmt(pf['alone_ms']):>14}  one network alone"
        )
        start = nets["start"]
        print(
            f"{'  of which the router start itself (p50/p99 ms)':56} "
            f"{fmt(pct(start, 0.5)) + '/' + fmt(pct(start, 0.99)):>14}"
        )
        rss = nets["rss"]
        print(
            f"{'memory per router, all its processes (p50/max MiB)':56} "
            f"{fmt(statistics.median(rss)) + '/' + fmt(max(rss)):>14} "
            f"{fmt(statistics.median(nets['instance_rss'])):>14}  per instance (p50)"
        )
    samples = rec["samples"]
    print(
        f"{'router destroyed -> traffic again (median/worst s)':56} "
        f"{fmt(statistics.median(samples)) + '/' + fmt(max(samples)):>14}  target < 10"
    )
    print(
        f"{'  until the reconcile loop starts a new one (median s)':56} "
        f"{fmt(statistics.median(rec['detect'])):>14}  "
        "reconcile every 2 s, dead after 2 missed checks"
    )
    print(f"{'  the new router start (median s)':56} {fmt(statistics.median(rec['restart'])):>14}")
    print(
        f"(zone over-provisioning for the run: CPU x{room[0]:.0f}, memory x{room[1]:.0f}: "
        "the allocator books 500 MHz and 256 MiB per router)"
    )
    fields: list[tuple[str, object]] = [
        ("pf_to_traffic_p50_ms", pct(total, 0.5)),
        ("pf_to_traffic_p99_ms", pct(total, 0.99)),
        ("networks", args.networks),
    ]
    if nets is not None:
        fields += [("total_s", nets["total_s"]), ("router_ready_p99_ms", pct(nets["ready"], 0.99))]
    fields.append(("recover_s", statistics.median(samples)))
    print(result_line("orchestration", fields))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
