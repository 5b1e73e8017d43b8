"""`skiff lab demo` (and `make demo`): the virtual router's main job, shown with real traffic.

Builds a lab, then walks through source NAT, a port forward, static NAT and a
source-limited firewall rule, printing what each side saw, and tears the lab
down again (unless --keep).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from appliances.lab import names
from appliances.lab.lab import Lab

PF_IP, NAT_IP = (str(ip) for ip in names.SPARE_PUBLIC_IPS)
ALLOWED, DENIED = (str(ip) for ip in names.REMOTE_CLIENT_IPS)


@dataclass
class Step:
    title: str
    ok: bool
    evidence: str


def _say(text: str) -> None:
    print(text, flush=True)


async def _curl(lab: Lab, role: str, url: str, source: str | None = None) -> tuple[bool, str]:
    argv = ["curl", "-s", "--max-time", "3", url]
    if source:
        argv[1:1] = ["--interface", source]
    result = await lab.run_in(role, argv, check=False, timeout=10)
    text = result.stdout.strip()
    return result.rc == 0, text or f"(no answer: curl exit {result.rc})"


async def _steps(lab: Lab) -> list[Step]:
    steps: list[Step] = []
    g1, g2 = names.Guest(1), names.Guest(2)

    lease = lab.lease(g1.name) or {}
    steps.append(Step(
        f"g1 got its address by DHCP from the router ({g1.ip})",
        str(lease.get("ip")) == str(g1.ip),
        f"lease: ip={lease.get('ip')} router={lease.get('router')} dns={lease.get('dns')} "
        f"domain={lease.get('domain')}",
    ))

    ok, seen = await _curl(lab, g1.name, f"http://{names.INTERNET_IP}/")
    steps.append(Step(
        f"source NAT: g1 -> internet arrives from {names.ROUTER_PUBLIC_IP}",
        ok and seen.split()[1].startswith(f"{names.ROUTER_PUBLIC_IP}:"),
        f"internet says: {seen}",
    ))

    forward = {"id": "web", "public_ip": PF_IP, "protocol": "tcp", "public_start": 8080,
               "guest_ip": str(g1.ip), "guest_start": 80}
    allow_web = {"id": "web-in", "public_ip": PF_IP, "protocol": "tcp", "start_port": 8080}
    reply = await lab.apply(lab.derive(port_forwards=[forward], ingress_rules=[allow_web]))
    ok, seen = await _curl(lab, "internet", f"http://{PF_IP}:8080/")
    steps.append(Step(
        f"port forward {PF_IP}:8080 -> g1:80 (applied in {reply.body.get('elapsed_ms')} ms)",
        ok and seen.startswith("g1 "),
        f"g1 says: {seen}",
    ))

    nat = {"public_ip": NAT_IP, "guest_ip": str(g2.ip)}
    allow_nat = {"id": "nat-in", "public_ip": NAT_IP, "protocol": "tcp", "start_port": 80,
                 "source_cidrs": [f"{ALLOWED}/32"]}
    await lab.apply(lab.derive(static_nats=[nat], ingress_rules=[allow_web, allow_nat]))
    ok_in, seen_in = await _curl(lab, "internet", f"http://{NAT_IP}/", source=ALLOWED)
    ok_out, seen_out = await _curl(lab, g2.name, f"http://{names.INTERNET_IP}/")
    steps.append(Step(
        f"static NAT {NAT_IP} <-> g2, both directions",
        ok_in and seen_in.startswith("g2 ") and ok_out and f" {NAT_IP}:" in f" {seen_out}",
        f"inbound, g2 says: {seen_in}; outbound, internet says: {seen_out}",
    ))

    ok_denied, seen_denied = await _curl(lab, "internet", f"http://{NAT_IP}/", source=DENIED)
    steps.append(Step(
        f"firewall: {NAT_IP}:80 open to {ALLOWED}/32 only",
        not ok_denied,
        f"from {DENIED}: {seen_denied}",
    ))

    status = (await lab.agent().request("GET", "/v1/status")).body
    services = ", ".join(f"{k}={v['state']}" for k, v in status["services"].items())
    steps.append(Step(
        "agent status",
        all(v["state"] == "ok" for v in status["services"].values()),
        f"generation {status['applied_generation']}; {services}",
    ))
    return steps


async def run_demo(name: str, keep: bool) -> int:
    lab = Lab(name, progress=lambda msg: _say(f"    {msg}"))
    _say(f"==> building lab '{name}' (namespaces skf-{name}-*)")
    failed = 0
    try:
        await lab.up(guests=2)
        for step in await _steps(lab):
            failed += not step.ok
            _say(f"{'ok  ' if step.ok else 'FAIL'} {step.title}\n       {step.evidence}")
    finally:
        if keep:
            _say(f"==> kept; try: skiff lab exec --name {name} g1 -- curl -s http://{names.INTERNET_IP}/"
                 f"\n    remove it with: skiff lab down --name {name}")
        else:
            _say("==> tearing the lab down")
            await lab.down()
    _say("==> demo passed" if not failed else f"==> {failed} step(s) failed")
    return 1 if failed else 0


def main(name: str = "demo", keep: bool = False) -> int:
    return asyncio.run(run_demo(name, keep))


if __name__ == "__main__":
    sys.exit(main())
