"""Console proxy: many concurrent sessions, the latency the proxy adds per frame, its memory.

A fake VNC server (its own process, loopback) pushes a small raw update at a fixed
rate to every connection, stamped with the monotonic clock (system-wide on Linux,
so comparable across processes). The same number of viewers read it first
directly (the baseline), then through `skiff agent --role console` (its own
process, configured over mutual TLS like any appliance, doing VNC authentication
for each session). Added latency = median stamped-to-received through the proxy
minus the same directly; the proxy's RSS is read from /proc with every session open.

    python benchmarks/cpvm_sessions.py [--sessions 200] [--fps 10] [--seconds 10]

The combined benchmark (ssvm_cpvm) calls ``run()`` and uses the dict it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from _common import fmt, progress, result_line  # noqa: E402

from appliances.common import console_token as ct  # noqa: E402
from appliances.console.testing import (  # noqa: E402
    FakeVncServer,
    TcpViewer,
    WsViewer,
    free_port,
)
from appliances.lab.agentclient import AgentClient  # noqa: E402
from appliances.lab.pki import create_lab_pki  # noqa: E402

NAME = "cpvm"
PROXY_ID = "cp-bench"
PASSWORD = "bench-pw"
FRAME = (64, 16)  # 4 KiB of raw pixels a frame
WARMUP_S = 1.0
CONNECT_AT_ONCE = 50


def _serve_fake_vnc(port_file: str, fps: float) -> None:
    """Child process: the fake VNC server until killed."""

    async def serve() -> None:
        async with FakeVncServer(password=PASSWORD, push_hz=fps, push_size=FRAME) as vnc:
            Path(port_file).write_text(str(vnc.port))
            await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def _wait_file(path: Path, proc: subprocess.Popen, tries: int = 300) -> str:
    for _ in range(tries):  # bounded: 30 s
        if path.exists() and path.read_text():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{path} was not written")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _read_frames(viewer, until: float, warm_until: float, latencies: list[float]) -> int:
    """Read pushed updates until ``until`` (monotonic s); latencies after warm-up, in ms."""
    frames = 0
    while time.monotonic() < until:
        update = await asyncio.wait_for(viewer.next_update(), 10)
        now = time.monotonic_ns()
        stamp = int.from_bytes(update.rects[0][4][:8], "little")
        frames += 1
        if now / 1e9 >= warm_until:
            latencies.append((now - stamp) / 1e6)
    return frames


async def _phase(label: str, connect, sessions: int, seconds: float, on_connected=None) -> dict:
    sem = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(i: int):
        async with sem:
            return await connect(i)

    started = time.perf_counter()
    viewers = await asyncio.gather(*(one(i) for i in range(sessions)))
    connect_s = time.perf_counter() - started
    extra = await on_connected() if on_connected else {}
    latencies: list[float] = []
    start = time.monotonic()
    try:
        frames = await asyncio.gather(
            *(
                _read_frames(v, start + WARMUP_S + seconds, start + WARMUP_S, latencies)
                for v in viewers
            )
        )
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    latencies.sort()
    result = {
        "connect_s": connect_s,
        "frames": sum(frames),
        "median_ms": statistics.median(latencies),
        "p95_ms": latencies[int(len(latencies) * 0.95)],
        **extra,
    }
    progress(
        f"{label}: {sessions} sessions up in {connect_s:.1f} s, {result['frames']} frames, "
        f"latency median {fmt(result['median_ms'])} ms, p95 {fmt(result['p95_ms'])} ms"
    )
    return result


async def measure(sessions: int = 200, fps: float = 10.0, seconds: float = 10.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-cpvm-"))
    port_file = tmp / "vnc.port"
    vnc = _spawn(
        [sys.executable, __file__, "--serve-fake-vnc", str(port_file), "--fps", str(fps)],
        tmp / "vnc.log",
    )
    agent = None
    try:
        vnc_port = int(_wait_file(port_file, vnc))
        direct = await _phase("direct", lambda i: _direct(vnc_port), sessions, seconds)

        pki = create_lab_pki(tmp / "pki", PROXY_ID, "127.0.0.1")
        api_port, public_port = free_port(), free_port()
        agent = _spawn(
            [
                sys.executable,
                "-m",
                "mgmt.cli",
                "agent",
                "--role",
                "console",
                "--id",
                PROXY_ID,
                "--state-dir",
                str(tmp / "state"),
                "--listen",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--ca",
                str(pki.ca_cert),
                "--cert",
                str(pki.server_cert),
                "--key",
                str(pki.server_key),
            ],
            tmp / "agent.log",
        )
        client = AgentClient(f"https://127.0.0.1:{api_port}", PROXY_ID, pki)
        await client.wait_healthy(60, alive=lambda: agent.poll() is None)
        key = ct.new_key()
        await client.apply(
            {
                "proxy_id": PROXY_ID,
                "generation": 1,
                "token_keys": [ct.encode_key(key)],
                "listen": {"address": "127.0.0.1", "port": public_port},
                "idle_timeout_s": 600,
                "session_limit": max(sessions, 1),
            }
        )
        idle_rss = _rss_mb(agent.pid)

        async def through_proxy(i: int) -> WsViewer:
            token = ct.issue(
                key,
                instance_id=f"vm-{i}",
                host="127.0.0.1",
                port=vnc_port,
                password=PASSWORD,
                ttl_s=300,
            )[0]
            viewer = await WsViewer.connect(
                f"ws://127.0.0.1:{public_port}/websockify?token={token}"
            )
            await viewer.handshake()
            return viewer

        async def with_sessions() -> dict:
            status = (await client.status()).body["services"]["console_proxy"]
            return {
                "rss_mb": _rss_mb(agent.pid),
                "reported": status["activeviewersessions"],
                "cpu_before": _cpu_s(agent.pid),
                "wall_before": time.monotonic(),
            }

        proxied = await _phase("proxied", through_proxy, sessions, seconds, with_sessions)
        proxy_cpu = (_cpu_s(agent.pid) - proxied["cpu_before"]) / (
            time.monotonic() - proxied["wall_before"]
        )
    finally:
        for proc in (agent, vnc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    added = proxied["median_ms"] - direct["median_ms"]
    return {
        "console_sessions": sessions,
        "reported_sessions": proxied["reported"],
        "fps": fps,
        "direct_median_ms": direct["median_ms"],
        "direct_p95_ms": direct["p95_ms"],
        "proxied_median_ms": proxied["median_ms"],
        "proxied_p95_ms": proxied["p95_ms"],
        "added_latency_ms": added,
        "added_p95_ms": proxied["p95_ms"] - direct["p95_ms"],
        "frames_direct": direct["frames"],
        "frames_proxied": proxied["frames"],
        "idle_rss_mb": idle_rss,
        "rss_mb": proxied["rss_mb"],
        "rss_kib_per_session": (proxied["rss_mb"] - idle_rss) * 1024 / max(sessions, 1),
        "proxy_cpu_pct": proxy_cpu * 100,
    }


async def _direct(port: int) -> TcpViewer:
    viewer = await TcpViewer.connect("127.0.0.1", port)
    await viewer.handshake(password=PASSWORD)
    return viewer


def run(sessions: int = 200, fps: float = 10.0, seconds: float = 10.0) -> dict:
    """Measure and print the figures; returns them (for ssvm_cpvm)."""
    r = asyncio.run(measure(sessions, fps, seconds))
    print(
        f"console proxy, {r['console_sessions']} concurrent sessions at {fmt(fps)} frames/s "
        f"each (4 KiB raw updates), {fmt(seconds)} s measured:"
    )
    print(
        f"  per-frame latency direct      median {fmt(r['direct_median_ms'])} ms, "
        f"p95 {fmt(r['direct_p95_ms'])} ms ({r['frames_direct']} frames)"
    )
    print(
        f"  per-frame latency via proxy   median {fmt(r['proxied_median_ms'])} ms, "
        f"p95 {fmt(r['proxied_p95_ms'])} ms ({r['frames_proxied']} frames)"
    )
    print(
        f"  added by the proxy            median {fmt(r['added_latency_ms'])} ms, "
        f"p95 {fmt(r['added_p95_ms'])} ms"
    )
    print(
        f"  proxy RSS                     {fmt(r['idle_rss_mb'])} MiB idle, "
        f"{fmt(r['rss_mb'])} MiB with {r['reported_sessions']} sessions reported "
        f"({fmt(r['rss_kib_per_session'])} KiB a session)"
    )
    print(
        f"  proxy CPU while bridging      {fmt(r['proxy_cpu_pct'])}% of one core "
        f"({fmt(sessions * fps)} frames/s)"
    )
    return r


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--serve-fake-vnc", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_fake_vnc:
        _serve_fake_vnc(args.serve_fake_vnc, args.fps)
        return 0
    r = run(args.sessions, args.fps, args.seconds)
    print(
        result_line(
            NAME,
            [
                ("console_sessions", r["console_sessions"]),
                ("added_latency_ms", r["added_latency_ms"]),
                ("rss_mb", r["rss_mb"]),
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
