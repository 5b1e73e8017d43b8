"""A bounded HTTP client loop that counts every request that did not get an answer.

Each request is a new TCP connection (as a reload hits hardest), sent by ``--workers``
concurrent loops for ``--seconds`` or until SIGTERM/SIGINT, whichever comes first.
Prints one JSON line: requests, ok, failed, the first few errors, and which servers
answered (the first word of the lab httpd's answer).

    python -m appliances.lab.httpload http://203.0.113.11/ --seconds 10 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

TIMEOUT = 5.0


async def _one(host: str, port: int, path: str) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise ConnectionError(f"bad answer: {head[:80]!r}")
    return body.decode(errors="replace").split(" ", 1)[0].strip()


async def run(url: str, seconds: float, workers: int, pause: float = 0.0) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    counts = {"requests": 0, "ok": 0, "failed": 0}
    servers: Counter[str] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            counts["requests"] += 1
            try:
                servers[await _one(host, port, path)] += 1
                counts["ok"] += 1
            except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
                counts["failed"] += 1
                if len(errors) < 10:
                    errors.append(f"{type(exc).__name__}: {exc}")
            if pause:
                await asyncio.sleep(pause)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {**counts, "errors": errors, "servers": dict(servers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliances.lab.httpload",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10.0, help="stop after this long")
    parser.add_argument("--workers", type=int, default=4, help="concurrent request loops")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds each loop waits between requests")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.seconds, args.workers, args.pause))
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
