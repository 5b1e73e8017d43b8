"""Benchmark ``vr_apply``: how fast the router agent applies big documents.

Runs the real agent (HTTPS, mutual TLS) in a throwaway network namespace
``skf-bench-<pid>`` whose eth0 (guest) and eth2 (public) are veth pairs with both
ends inside the namespace, and measures, through ``PUT /v1/config``:

* full apply of documents with 100, 1,000 and 10,000 port forwards, each with its
  matching ingress firewall rule (same public IP, protocol and port, source
  0.0.0.0/0, as CloudStack creates them), plus 5,000 DHCP hosts. Every timed PUT
  also flips the egress default policy, which changes the ruleset's shape, so the
  agent replaces the whole table (its summary must say "full ruleset");
* in the same namespace, a bare ``nft -f`` of the ruleset file the agent rendered,
  once replacing the loaded table (what the agent's apply does) and once into an
  empty namespace;
* the 10,000-rule document with one forward (and its firewall rule) added;
* the same document with nothing changed but the generation (the parse/verify floor);
* the same document with one DHCP host added: dnsmasq must reload (SIGHUP) and keep
  its pid and restart count;
* for scale, the CloudStack way: one ``nft`` process per forward, 1,000 forwards.

Client times are wall-clock from sending the (pre-serialised) body to having the
parsed JSON answer, over a kept-alive TLS connection; the agent's ``elapsed_ms`` is
its prepare/check/commit time (without JSON decoding, parsing, verification and
saving the document). Each timing is repeated and reported as median/min.

Needs root. Run: ``.venv/bin/python benchmarks/vr_apply.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from _common import Samples, Stopwatch, make_pki, progress, result_line  # noqa: E402

from appliances.agent.tls import client_context  # noqa: E402

PREFIX = "skf-bench-"
ROUTER_ID = "skf-bench-vr"
PORT = 8443
SIZES = (100, 1_000, 10_000)
DHCP_HOSTS = 5_000
PUBLIC_IPS = 20
CS_FORWARDS = 1_000
GUEST_NET = ipaddress.IPv4Network("10.64.0.0/18")
PUBLIC_NET = ipaddress.IPv4Network("203.0.113.0/24")  # TEST-NET-3, only inside the namespace
CLONE_NEWNET = 0x40000000
TABLE = "skiff"


class BenchError(RuntimeError):
    pass


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[:2000]}")
    return result


# ---------------------------------------------------------------------------------------
# Namespace and agent lifetime


def _owner_alive(name: str) -> bool:
    """A benchmark's names carry its pid; is that benchmark still running?"""
    digits = name[len(PREFIX):].split("-")[0]
    if not digits.isdigit():
        return False
    if int(digits) == os.getpid():
        return True
    try:
        cmdline = Path(f"/proc/{digits}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vr_apply" in cmdline


def _kill_netns_pids(ns: str) -> None:
    result = sh("ip", "netns", "pids", ns, check=False)
    # This process has entered the namespace too: leave it out.
    pids = [int(p) for p in result.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()
                    and not _is_zombie(p)]
            time.sleep(0.05)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_namespace(ns: str) -> None:
    _kill_netns_pids(ns)
    sh("ip", "netns", "del", ns, check=False)


def clean_stale() -> None:
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and not _owner_alive(name):
            progress(f"removing stale namespace {name}")
            remove_namespace(name)
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if path.is_dir() and not _owner_alive(path.name):
            progress(f"removing stale directory {path}")
            shutil.rmtree(path, ignore_errors=True)


class Lab:
    """The router namespace, its devices, the agent and the temp dir; cleaned up once."""

    def __init__(self) -> None:
        self.ns = f"{PREFIX}{os.getpid()}"
        self.tmp: Path | None = None
        self.agent: subprocess.Popen | None = None
        self.launcher = ""
        self._cleaned = False

    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.ns}-"))
        self.tmp.chmod(0o755)  # dnsmasq runs as nobody and reads files below
        self.state = self.tmp / "state"
        self.pki = make_pki(self.tmp / "pki", ROUTER_ID)
        sh("ip", "netns", "add", self.ns)
        ip = ("ip", "-n", self.ns)
        sh(*ip, "link", "set", "lo", "up")
        for dev in ("eth0", "eth2"):
            sh(*ip, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            sh(*ip, "link", "set", f"{dev}p", "up")
            sh(*ip, "link", "set", dev, "up")

    def start_agent(self) -> None:
        agent_args = [
            "--role", "router", "--id", ROUTER_ID, "--state-dir", str(self.state),
            "--listen", "127.0.0.1", "--port", str(PORT), "--ca", self.pki["ca"],
            "--cert", self.pki["server"], "--key", self.pki["server_key"],
        ]
        try:
            import mgmt.cli  # noqa: F401 - only to see whether the real CLI imports

            entry = ["-m", "mgmt.cli", "agent"]
            self.launcher = "python -m mgmt.cli agent"
        except Exception:  # the CLI is still being assembled: same parser, no wrapper
            entry = ["-c", BOOTSTRAP]
            self.launcher = "appliances.agent.cli parser (mgmt.cli does not import)"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = open(self.tmp / "agent.log", "wb")  # noqa: SIM115 - the child keeps it
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, *entry, *agent_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            start_new_session=True,
        )
        log.close()

    def agent_log(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.tmp / "agent.log").read_text().splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()  # the agent stops dnsmasq itself
            try:
                self.agent.wait(5)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(5)
        remove_namespace(self.ns)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


BOOTSTRAP = """\
import argparse, sys
from appliances.agent import cli
parser = argparse.ArgumentParser(prog="skiff")
cli.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["agent", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def enter_netns(ns: str) -> None:
    """Move this (still single-threaded) process into the namespace, as ip netns exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Documents


def _public_ip(n: int) -> str:
    return str(PUBLIC_NET.network_address + 10 + n)


def _host(i: int) -> dict:
    return {
        "mac": "02:5b:" + ":".join(f"{(i >> shift) & 255:02x}" for shift in (24, 16, 8, 0)),
        "ip": str(GUEST_NET.network_address + 10 + i),
        "hostname": f"vm-{i}",
    }


def _forward(i: int) -> tuple[dict, dict]:
    """Forward ``i`` and its ingress rule: public IPs round robin, one port each."""
    public_ip, port = _public_ip(i % PUBLIC_IPS), 1024 + i // PUBLIC_IPS
    forward = {
        "id": f"pf-{i}", "public_ip": public_ip, "protocol": "tcp", "public_start": port,
        "guest_ip": str(GUEST_NET.network_address + 10 + i % DHCP_HOSTS),
        "guest_start": 8000 + i % 1000,
    }
    rule = {
        "id": f"fw-{i}", "public_ip": public_ip, "protocol": "tcp", "start_port": port,
        "end_port": port, "source_cidrs": ["0.0.0.0/0"],
    }
    return forward, rule


def document(generation: int, forwards: int, hosts: int = DHCP_HOSTS,
             egress: str = "allow") -> dict:
    pairs = [_forward(i) for i in range(forwards)]
    gateway = GUEST_NET.network_address + 1
    return {
        "schema_version": 1,
        "router_id": ROUTER_ID,
        "generation": generation,
        "interfaces": [
            {"role": "guest", "name": "eth0",
             "addresses": [f"{gateway}/{GUEST_NET.prefixlen}"]},
            {"role": "public", "name": "eth2",
             "addresses": [f"{PUBLIC_NET.network_address + 2}/{PUBLIC_NET.prefixlen}"],
             "gateway": str(PUBLIC_NET.network_address + 1)},
        ],
        "guest_network": {"cidr": str(GUEST_NET), "gateway": str(gateway),
                          "domain": "bench.internal"},
        "public_ips": [{"ip": _public_ip(n), "source_nat": n == 0} for n in range(PUBLIC_IPS)],
        "dhcp_hosts": [_host(i) for i in range(hosts)],
        "ingress_rules": [rule for _, rule in pairs],
        "egress": {"default_policy": egress},
        "port_forwards": [forward for forward, _ in pairs],
    }


# ---------------------------------------------------------------------------------------
# Measuring


class Client:
    def __init__(self, pki: dict) -> None:
        ctx = client_context(Path(pki["ca"]), Path(pki["client"]), Path(pki["client_key"]))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=1),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        self.base = f"https://127.0.0.1:{PORT}"
        self.generation = 0

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str) -> dict:
        async with self.session.get(self.base + path, server_hostname=ROUTER_ID) as resp:
            if resp.status != 200:
                raise BenchError(f"GET {path}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def wait_healthy(self, lab: Lab, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if lab.agent.poll() is not None:
                raise BenchError(f"the agent exited with {lab.agent.returncode}:\n"
                                 f"{lab.agent_log()}")
            try:
                await self.get("/v1/health")
                return
            except (aiohttp.ClientError, OSError, BenchError) as exc:
                if time.monotonic() > deadline:
                    raise BenchError(f"the agent did not answer within {timeout:g}s: {exc}\n"
                                     f"{lab.agent_log()}") from None
            await asyncio.sleep(0.1)

    async def put(self, build, **kwargs) -> tuple[float, dict]:
        """PUT a fresh document (next generation). Returns (client ms, answer)."""
        self.generation += 1
        body = json.dumps(build(self.generation, **kwargs)).encode()
        self.last_size = len(body)
        with Stopwatch() as sw:
            async with self.session.put(
                self.base + "/v1/config", data=body, server_hostname=ROUTER_ID,
                headers={"Content-Type": "application/json"},
            ) as resp:
                answer = await resp.json()
        if resp.status != 200:
            raise BenchError(f"PUT generation {self.generation}: {resp.status} "
                             f"{json.dumps(answer)[:3000]}")
        return sw.ms, answer


def time_argv(*argv: str) -> float:
    with Stopwatch() as sw:
        sh(*argv)
    return sw.ms


def expect(answer: dict, service: str, words: str, only: bool = False) -> None:
    services = answer.get("services", {})
    summary = services.get(service, "")
    if words not in summary or (only and set(services) != {service}):
        raise BenchError(f"expected {service} to report {words!r}"
                         f"{' and nothing else' if only else ''}; the agent said {services}")


async def measure(lab: Lab, repeat: int) -> list[str]:
    out: list[str] = []
    client = Client(lab.pki)
    try:
        await client.wait_healthy(lab)
        status = await client.get("/v1/status")
        progress(f"agent up ({lab.launcher}), version {status.get('version')}")

        ms, answer = await client.put(document, forwards=0)
        expect(answer, "dnsmasq", "restart")
        progress(f"seed document (0 forwards, {DHCP_HOSTS} hosts) applied in {ms:.0f} ms: "
                 f"{answer['services']}")

        ruleset = lab.state / "nftables" / "ruleset.nft"
        egress = "allow"
        sizes: dict[int, dict[str, Samples]] = {}
        for size in SIZES:
            s = sizes[size] = {k: Samples() for k in ("apply", "agent", "nft", "nft_empty")}
            # The first PUT of a size brings its new forwards and rules: the agent
            # validates them cold. The repeats reuse what it remembered (the steady
            # state of a router that gets one document after another).
            s["cold"] = Samples()
            for n in range(repeat + 1):
                egress = "deny" if egress == "allow" else "allow"
                ms, answer = await client.put(document, forwards=size, egress=egress)
                expect(answer, "nftables", "full ruleset")
                if n == 0:
                    s["cold"].add(ms)
                    continue
                s["apply"].add(ms)
                s["agent"].add(answer["elapsed_ms"])
            body_kb = client.last_size / 1024
            for _ in range(repeat):  # the same file, replacing the loaded table
                s["nft"].add(time_argv("nft", "-f", str(ruleset)))
            for _ in range(repeat):  # the same file into a namespace without the table
                sh("nft", "delete", "table", "ip", TABLE)
                s["nft_empty"].add(time_argv("nft", "-f", str(ruleset)))
            progress(f"{size} rules: apply {s['apply'].brief()} ms (agent {s['agent'].brief()}), "
                     f"nft -f {s['nft'].brief()} ms, body {body_kb:.0f} KiB")
        size = SIZES[-1]
        listed = json.loads(sh("nft", "-j", "list", "map", "ip", TABLE, "pf_port").stdout)
        loaded = sum(len(i["map"].get("elem", [])) for i in listed["nftables"] if "map" in i)
        if loaded != size:
            raise BenchError(f"pf_port holds {loaded} elements, expected {size}")

        change, change_agent = Samples(), Samples()
        for k in range(1, repeat + 1):
            ms, answer = await client.put(document, forwards=size + k, egress=egress)
            expect(answer, "nftables", "element update", only=True)
            change.add(ms)
            change_agent.add(answer["elapsed_ms"])
        forwards = size + repeat
        progress(f"one forward added: {change.brief()} ms (agent {change_agent.brief()})")

        noop, noop_agent = Samples(), Samples()
        for _ in range(repeat):
            ms, answer = await client.put(document, forwards=forwards, egress=egress)
            if answer.get("changed"):
                raise BenchError(f"a generation-only change changed {answer['services']}")
            noop.add(ms)
            noop_agent.add(answer["elapsed_ms"])
        progress(f"nothing changed: {noop.brief()} ms (agent {noop_agent.brief()})")

        before = (await client.get("/v1/status"))["services"]["dnsmasq"]["daemon"]
        dhcp, dhcp_agent = Samples(), Samples()
        for k in range(1, repeat + 1):
            ms, answer = await client.put(document, forwards=forwards, egress=egress,
                                          hosts=DHCP_HOSTS + k)
            expect(answer, "dnsmasq", "reload", only=True)
            dhcp.add(ms)
            dhcp_agent.add(answer["elapsed_ms"])
        after = (await client.get("/v1/status"))["services"]["dnsmasq"]["daemon"]
        if (after["pid"], after["restarts"]) != (before["pid"], before["restarts"]) \
                or not after["running"]:
            raise BenchError(f"dnsmasq was restarted: before {before}, after {after}")
        progress(f"one DHCP host added: {dhcp.brief()} ms (agent {dhcp_agent.brief()}), "
                 f"dnsmasq pid {after['pid']} kept")

        cs_ms = cloudstack_style(CS_FORWARDS)
        progress(f"{CS_FORWARDS} nft processes, one per forward: {cs_ms:.0f} ms")
    finally:
        await client.close()

    big = sizes[SIZES[-1]]
    out.append(f"vr_apply: agent in namespace {lab.ns} ({lab.launcher}); "
               f"{DHCP_HOSTS} DHCP hosts, {PUBLIC_IPS} public IPs; {repeat} runs, ms median/min")
    out.append("full apply (PUT, egress policy flipped so the whole table is replaced; "
               "cold = the first PUT, whose new rules are all validated anew):")
    out.append(f"  {'rules':>6}  {'apply_ms':>13}  {'agent_ms':>13}  {'nft -f replace':>14}  "
               f"{'nft -f empty':>13}  {'apply/nft':>9}  {'cold_ms':>8}")
    for size, s in sizes.items():
        out.append(f"  {size:>6}  {s['apply'].brief():>13}  {s['agent'].brief():>13}  "
                   f"{s['nft'].brief():>14}  {s['nft_empty'].brief():>13}  "
                   f"{s['apply'].median / s['nft'].median:>8.1f}x  {s['cold'].median:>8.0f}")
    out.append(f"change_one ({size} -> +1 forward and rule, element delta): "
               f"{change.brief()} (agent {change_agent.brief()})")
    out.append(f"nothing changed ({forwards} rules, {DHCP_HOSTS} hosts, new generation only): "
               f"{noop.brief()} (agent {noop_agent.brief()})  <- parse/verify/prepare floor")
    out.append(f"dhcp_reload ({DHCP_HOSTS} hosts +1, same doc otherwise): {dhcp.brief()} "
               f"(agent {dhcp_agent.brief()}); dnsmasq SIGHUP, pid {after['pid']} and "
               f"restarts={after['restarts']} unchanged")
    out.append(f"cloudstack-style: {CS_FORWARDS} forwards as one `nft add element` process each: "
               f"{cs_ms:.0f} ms ({cs_ms / CS_FORWARDS:.2f} ms per forward; "
               f"CloudStack's iptables VR: 2.2 s per 1,000)")
    targets = [
        ("full apply 10,000 < 250 ms", big["apply"].median < 250),
        ("full apply within 2x of nft -f", big["apply"].median <= 2 * big["nft"].median),
        ("change_one < 50 ms", change.median < 50),
        ("dhcp_reload < 200 ms without restart", dhcp.median < 200),
    ]
    out.append("targets: " + "; ".join(f"{t}: {'ok' if ok else 'MISSED'}" for t, ok in targets))
    for size, s in sizes.items():
        out.append(result_line("vr_apply_size", [
            ("rules", size), ("apply_ms", s["apply"].median), ("agent_ms", s["agent"].median),
            ("nft_ms", s["nft"].median), ("nft_empty_ms", s["nft_empty"].median),
            ("cold_apply_ms", s["cold"].median)]))
    out.append(result_line("vr_apply", [
        ("rules", SIZES[-1]), ("apply_ms", big["apply"].median), ("nft_ms", big["nft"].median),
        ("change_one_ms", change.median), ("dhcp_hosts", DHCP_HOSTS),
        ("dhcp_reload_ms", dhcp.median)]))
    return out


def cloudstack_style(count: int) -> float:
    """One nft process per forward into a scratch table (in the namespace), as a VR that
    runs one iptables command per rule does. Returns the total ms."""
    table = ("ip", "skf_bench_cs")
    sh("nft", "add", "table", *table)
    sh("nft", "add", "map", *table, "pf", "{ type ipv4_addr . inet_proto . inet_service : "
       "ipv4_addr . inet_service ; }")
    try:
        with Stopwatch() as sw:
            for i in range(count):
                forward, _ = _forward(i)
                sh("nft", "add", "element", *table, "pf",
                   f"{{ {forward['public_ip']} . tcp . {forward['public_start']} : "
                   f"{forward['guest_ip']} . {forward['guest_start']} }}")
        return sw.ms
    finally:
        sh("nft", "delete", "table", *table, check=False)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (default 5)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("vr_apply: needs root (it builds a network namespace and runs nft and "
              "dnsmasq in it)", file=sys.stderr)
        return 2
    for tool in ("ip", "nft", "dnsmasq"):
        if shutil.which(tool) is None:
            print(f"vr_apply: {tool} is not installed", file=sys.stderr)
            return 2

    lab = Lab()
    atexit.register(lab.cleanup)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    try:
        clean_stale()
        lab.setup()
        lab.start_agent()
        progress(f"namespace {lab.ns}, state in {lab.state}")
        enter_netns(lab.ns)
        lines = asyncio.run(measure(lab, args.repeat))
    except BenchError as exc:
        print(f"vr_apply: {exc}", file=sys.stderr)
        log = lab.agent_log()
        if log:
            print(f"--- agent log (last lines) ---\n{log}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        progress("interrupted; cleaning up")
        raise
    finally:
        lab.cleanup()
    progress(f"done in {time.monotonic() - started:.0f} s")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
