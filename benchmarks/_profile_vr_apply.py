"""Where the time of one ``vr_apply`` PUT goes: each step the agent runs, timed alone.

Not a benchmark (no RESULT line): a helper for whoever makes the agent faster. It
builds the same documents as ``vr_apply.py`` and times, in this process,

* the request side: JSON decoding, pydantic validation, verify(), the document hash
  and saving the document (what a PUT costs besides ``elapsed_ms``), with the
  slowest validated types;
* each service step (prepare / check / commit) of the real router services, run
  in-process inside a throwaway namespace ``skf-bench-<pid>-prof`` (needs root), for
  a full apply, one forward added and one DHCP host added (dnsmasq really runs and
  reloads on SIGHUP).

Run: ``.venv/bin/python benchmarks/_profile_vr_apply.py [--rules 10000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vr_apply as bench  # noqa: E402
from _common import Samples, Stopwatch  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from appliances.agent.service import AgentContext  # noqa: E402
from appliances.agent.store import DocumentStore, document_hash  # noqa: E402
from appliances.router import nft_model, nft_render  # noqa: E402
from appliances.router.document import (  # noqa: E402
    DhcpHost,
    IngressRule,
    PortForward,
    RouterDocument,
)
from appliances.router.services import dnsmasq  # noqa: E402
from appliances.router.services.dnsmasq import DnsmasqService  # noqa: E402
from appliances.router.services.network import NetworkService  # noqa: E402
from appliances.router.services.nftables import NftablesService  # noqa: E402
from appliances.router.verify import verify  # noqa: E402


def line(label: str, samples: Samples) -> None:
    print(f"  {label:<52} {samples.median:8.1f} ms  (min {samples.min:.1f})")


def timed(label: str, fn, repeat: int):
    samples, result = Samples(), None
    for _ in range(repeat):
        with Stopwatch() as sw:
            result = fn()
        samples.add(sw.ms)
    line(label, samples)
    return result


async def atimed(label: str, coro_fn, repeat: int = 1):
    samples, result = Samples(), None
    for _ in range(repeat):
        with Stopwatch() as sw:
            result = await coro_fn()
        samples.add(sw.ms)
    line(label, samples)
    return result


def request_side(rules: int, repeat: int, tmp: Path) -> None:
    data = bench.document(1, rules)
    body = json.dumps(data).encode()
    print(f"request side, {rules} forwards + {rules} rules + {bench.DHCP_HOSTS} hosts, "
          f"{len(body) / 1e6:.1f} MB of JSON:")
    timed("json.loads (aiohttp request.json)", lambda: json.loads(body), repeat)
    doc = timed("RouterDocument.model_validate", lambda: RouterDocument.model_validate(data),
                repeat)
    for model, key in ((PortForward, "port_forwards"), (IngressRule, "ingress_rules"),
                       (DhcpHost, "dhcp_hosts")):
        adapter = TypeAdapter(list[model])
        timed(f"  of which list[{model.__name__}] x{len(data[key])}",
              lambda a=adapter, k=key: a.validate_python(data[k]), repeat)
    timed("verify() (every cross-field check)", lambda: list(verify(doc)), repeat)
    timed("document_hash (sorted json.dumps + sha256)", lambda: document_hash(data), repeat)
    store = DocumentStore(tmp)
    timed("DocumentStore.save (json.dumps + write + fsync)", lambda: store.save(data), repeat)
    plan = timed("nft_model.plan", lambda: nft_model.plan(doc, bench.PORT), repeat)
    timed("nft_render.render_ruleset (shape)",
          lambda: nft_render.render_ruleset(plan, with_elements=False), repeat)
    timed("nft_render.render_ruleset (full)", lambda: nft_render.render_ruleset(plan), repeat)
    plan2 = nft_model.plan(RouterDocument.model_validate(bench.document(2, rules + 1)), bench.PORT)
    timed("nft_render.render_delta (+1 forward)", lambda: nft_render.render_delta(plan, plan2),
          repeat)
    timed("dnsmasq.render (5 files)", lambda: dnsmasq.render(doc, str(tmp)), repeat)


async def service_side(rules: int, repeat: int, state: Path) -> None:
    ctx = AgentContext(bench.ROUTER_ID, state, bench.PORT)
    network, nft, dns = NetworkService(ctx), NftablesService(ctx), DnsmasqService(ctx)
    generation = 0

    def doc(**kwargs) -> RouterDocument:
        nonlocal generation
        generation += 1
        return RouterDocument.model_validate(bench.document(generation, **kwargs))

    try:
        seed = doc(forwards=0)
        for service in (network, nft, dns):
            change = await service.prepare(seed)
            await service.check(change)
            await service.commit(change)
        print(f"services, in namespace (median of {repeat}):")
        egress = "allow"
        prep = {name: Samples() for name in ("network", "nftables", "dnsmasq")}
        commit = Samples()
        for _ in range(repeat):
            egress = "deny" if egress == "allow" else "allow"
            big = doc(forwards=rules, egress=egress)
            for name, service in (("network", network), ("nftables", nft), ("dnsmasq", dns)):
                with Stopwatch() as sw:
                    change = await service.prepare(big)
                prep[name].add(sw.ms)
                if name == "nftables":
                    with Stopwatch() as sw:
                        await service.commit(change)
                    commit.add(sw.ms)
        for name, samples in prep.items():
            what = "full ruleset" if name == "nftables" else "nothing to do"
            line(f"{name}.prepare, full-apply document ({what})", samples)
        line(f"nftables.commit, full ruleset of {rules} rules (nft -f)", commit)

        delta_prep, delta_commit = Samples(), Samples()
        for k in range(1, repeat + 1):
            one = doc(forwards=rules + k, egress=egress)
            with Stopwatch() as sw:
                change = await nft.prepare(one)
            delta_prep.add(sw.ms)
            with Stopwatch() as sw:
                await nft.commit(change)
            delta_commit.add(sw.ms)
        line("nftables.prepare, one forward added", delta_prep)
        line("nftables.commit, one forward added (element delta)", delta_commit)

        steps = {name: Samples() for name in ("prepare", "check", "commit")}
        pid = dns.daemon.pid
        for k in range(1, repeat + 1):
            host = doc(forwards=rules + repeat, egress=egress, hosts=bench.DHCP_HOSTS + k)
            with Stopwatch() as sw:
                change = await dns.prepare(host)
            steps["prepare"].add(sw.ms)
            with Stopwatch() as sw:
                await dns.check(change)
            steps["check"].add(sw.ms)
            with Stopwatch() as sw:
                await dns.commit(change)
            steps["commit"].add(sw.ms)
        assert dns.daemon.pid == pid, "dnsmasq was restarted"
        line("dnsmasq.prepare, one host added (render + compare)", steps["prepare"])
        line("dnsmasq.check (dnsmasq --test, hosts inlined)", steps["check"])
        line("dnsmasq.commit (write files, SIGHUP, wait for 'read')", steps["commit"])
        reload = Samples()
        for _ in range(repeat):
            mark = dns.daemon.log_mark
            with Stopwatch() as sw:
                await dns._reload()
            reload.add(sw.ms)
            assert dns.daemon.log_mark > mark
        line(f"  of which SIGHUP -> dnsmasq re-read {bench.DHCP_HOSTS}+ hosts", reload)
    finally:
        await dns.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix=f"{bench.PREFIX}{os.getpid()}-prof-"))
    tmp.chmod(0o755)
    try:
        request_side(args.rules, args.repeat, tmp)
        if os.geteuid() != 0:
            print("(not root: the service side needs a namespace; skipped)")
            return 0
        lab = bench.Lab()
        lab.ns = f"{bench.PREFIX}{os.getpid()}-prof"
        try:
            bench.clean_stale()
            lab.setup()
            bench.enter_netns(lab.ns)
            started = time.monotonic()
            asyncio.run(service_side(args.rules, args.repeat, lab.state))
            print(f"(service side took {time.monotonic() - started:.0f} s)")
        finally:
            lab.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
