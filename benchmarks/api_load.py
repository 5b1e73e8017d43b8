"""Benchmark `api_load`: signed API requests at concurrency 50 against a live server.

The management server runs in its own process (SQLite, a fresh home); this
process is the load generator (aiohttp, one connection per worker, kept
alive). Two loads: listZones (three zones), and 500-row pages of a 10,000-row listing
(listAsyncJobs over 10,000 seeded jobs, the size of a listVirtualMachines
answer). The baseline in the same run is a bare aiohttp handler answering the
same-sized JSON with no signature, database or envelope: the HTTP stack alone.

Requests carry a real HMAC signature that the server checks every time (signed
once without signatureVersion 3, so the same URL stays valid). The per-account
rate limit is raised for the run (it would answer 429 at its default of 500/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, progress, result_line  # noqa: E402

from mgmt.api import signing  # noqa: E402

CONCURRENCY = 50
SEED_ROWS = 10_000
PAGE_SIZE = 500
ZONES = ("zone-a", "zone-b", "zone-c")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    with open(home.parent / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mgmt.cli", "mgmt", "serve", "--home", str(home), "--port",
             str(port)],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                log_text = (home.parent / "server.log").read_text()
                raise SystemExit(f"the server exited: {log_text}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start within 30 s")


def seed(home: Path, rows: int) -> None:
    """10,000 finished jobs of the admin, and no rate limit for the run (direct SQL)."""
    db = sqlite3.connect(home / "skiff.db")
    user_id, account_id = db.execute(
        "SELECT users.id, users.account_id FROM users WHERE username = 'admin'").fetchone()
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
    db.executemany(
        "INSERT INTO async_jobs (uuid, created, cmd, kind, user_id, account_id, status, "
        "proc_status, result_code, result_type, result, params, resumable, completed) "
        "VALUES (?, ?, 'deployVirtualMachine', 'deployvirtualmachine', ?, ?, 1, 0, 0, "
        "'object', ?, '{}', 0, ?)",
        [(str(uuid.uuid4()), now, user_id, account_id,
          json.dumps({"virtualmachine": {"id": str(uuid.uuid4()), "name": f"vm-{i}",
                                         "state": "Running"}}), now)
         for i in range(rows)],
    )
    db.execute("UPDATE configuration SET value = '1000000' WHERE name = 'api.throttling.max'")
    db.commit()
    db.close()


def signed_url(base: str, keys: dict, **params: str) -> str:
    query = {"apiKey": keys["apikey"], "response": "json", **params}
    query["signature"] = signing.sign(query, keys["secretkey"])
    return str(aiohttp.client.URL(base).with_query(query))


async def load(url: str, count: int, concurrency: int = CONCURRENCY) -> tuple[float, list[float]]:
    """(requests per second, latencies in ms) of ``count`` GETs of ``url``.

    Each of the ``concurrency`` connections first sends one untimed request, so
    the figures are the steady state: TCP connections open, the server's
    database pool grown, its statements compiled."""
    latencies: list[float] = []
    remaining = count
    errors = 0

    async def get(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                errors += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await get(session)
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as first:
            body = await first.read()
            if first.status != 200:
                raise SystemExit(f"{url} answered {first.status}: {body[:300]!r}")
        await asyncio.gather(*(get(session) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{errors} of {count} requests failed")
    return count / elapsed, latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def baseline_server(port: int, body: bytes) -> subprocess.Popen:
    """A bare aiohttp app in its own process answering ``body`` (the HTTP stack alone)."""
    code = (
        "import sys\nfrom aiohttp import web\n"
        "body = sys.stdin.buffer.read()\n"
        "async def h(r):\n    return web.Response(body=body, content_type='application/json')\n"
        "app = web.Application(); app.router.add_get('/', h)\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None, access_log=None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    proc.stdin.write(body)
    proc.stdin.close()
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the baseline server did not start")


async def measure(requests_zones: int, requests_pages: int) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="skf-bench-api-"))
    home = tmp / "home"
    port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        progress("starting the management server (SQLite) for the first time")
        keys_out = subprocess.run(
            [sys.executable, "-m", "mgmt.cli", "mgmt", "keys", "--home", str(home)],
            capture_output=True, text=True, check=True)
        keys = json.loads(keys_out.stdout)
        progress(f"seeding {SEED_ROWS} job rows")
        seed(home, SEED_ROWS)
        procs.append(start_server(home, port))
        base = f"http://127.0.0.1:{port}/client/api"
        async with aiohttp.ClientSession() as session:
            for name in ZONES:  # listZones answers real zones, not the empty list
                create = signed_url(base, keys, command="createZone", name=name,
                                    networktype="Advanced", dns1="198.51.100.53",
                                    internaldns1="198.51.100.53", allocationstate="Enabled")
                async with session.get(create) as r:
                    if r.status != 200:
                        raise SystemExit(f"createZone answered {r.status}: {await r.text()}")
        zones = signed_url(base, keys, command="listZones")
        page = signed_url(base, keys, command="listAsyncJobs", page="2",
                          pagesize=str(PAGE_SIZE))

        progress(f"listZones: {requests_zones} signed requests at concurrency {CONCURRENCY}")
        zones_rps, zones_lat = await load(zones, requests_zones)
        progress(f"{PAGE_SIZE}-row pages: {requests_pages} signed requests")
        page_rps, page_lat = await load(page, requests_pages)

        async with aiohttp.ClientSession() as session:
            async with session.get(zones) as r:
                zones_body = await r.read()
            async with session.get(page) as r:
                page_body = await r.read()
        bport = free_port()
        procs.append(baseline_server(bport, zones_body))
        base_zones_rps, base_zones_lat = await load(f"http://127.0.0.1:{bport}/", requests_zones)
        procs.pop().terminate()
        bport = free_port()
        procs.append(baseline_server(bport, page_body))
        base_page_rps, base_page_lat = await load(f"http://127.0.0.1:{bport}/", requests_pages)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)

    lines = [
        f"api_load: concurrency {CONCURRENCY}, signed GETs, SQLite, {os.cpu_count()} cores",
        f"  {'load':<24} {'rps':>8} {'p50_ms':>8} {'p99_ms':>8}   baseline: bare aiohttp, "
        "same body",
        f"  {'listZones':<24} {fmt(zones_rps):>8} {fmt(sorted(zones_lat)[len(zones_lat) // 2]):>8} "
        f"{fmt(p99(zones_lat)):>8}   {fmt(base_zones_rps)} rps, p99 {fmt(p99(base_zones_lat))} ms",
        f"  {'listAsyncJobs page 500':<24} {fmt(page_rps):>8} "
        f"{fmt(sorted(page_lat)[len(page_lat) // 2]):>8} {fmt(p99(page_lat)):>8}   "
        f"{fmt(base_page_rps)} rps, p99 {fmt(p99(base_page_lat))} ms",
        "targets: listZones >= 1000 rps: "
        f"{'ok' if zones_rps >= 1000 else 'MISSED'}; 500-row page p99 < 250 ms: "
        f"{'ok' if p99(page_lat) < 250 else 'MISSED'}",
        result_line("api_load", [("list_zones_rps", zones_rps),
                                 ("list_zones_p99_ms", p99(zones_lat)),
                                 ("page500_p99_ms", p99(page_lat))]),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, default=10_000, help="listZones requests")
    parser.add_argument("--pages", type=int, default=1_000, help="page requests")
    args = parser.parse_args(argv)
    # The load generator shares the two cores with the server: the lighter its loop,
    # the more of the machine the server gets.
    for line in uvloop.run(measure(args.zones, args.pages)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
