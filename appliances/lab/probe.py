"""A probe stream: one HTTP GET every ``--interval`` seconds, each on a new connection.

Prints ``ok <start time>`` or ``fail <start time> <reason>`` per probe (start times
from time.time(), in seconds), so the longest gap between successful probes can be
read off afterwards (failover measurements). Probes run concurrently: a probe that
hangs does not delay the next one. A probe counts only if it is answered within
``--timeout`` (0.5 s: shorter than the first SYN retransmission, so a probe sent
during an outage does not count as a success a second later). Stops after
``--duration`` seconds.

    python -m appliances.lab.probe --url http://203.0.113.1/ --interval 0.1 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit


async def probe(host: str, port: int, path: str, timeout: float) -> str | None:
    """None when the server answered 200, else the reason."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return f"connect: {type(exc).__name__}"
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return None if b" 200 " in line else f"status: {line[:40]!r}"
    except (OSError, TimeoutError) as exc:
        return f"read: {type(exc).__name__}"
    finally:
        writer.close()


async def run(url: str, interval: float, duration: float, timeout: float) -> None:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"

    async def one(started: float) -> None:
        reason = await probe(host, port, path, timeout)
        line = f"ok {started:.3f}" if reason is None else f"fail {started:.3f} {reason}"
        print(line, flush=True)

    tasks = []
    loop = asyncio.get_running_loop()
    begin = loop.time()
    k = 0
    while loop.time() - begin < duration:
        tasks.append(asyncio.create_task(one(time.time())))
        k += 1
        await asyncio.sleep(max(0.0, begin + k * interval - loop.time()))
    await asyncio.gather(*tasks)


def longest_gap_ms(lines: list[str]) -> float:
    """The longest time between two consecutive successful probes' start times."""
    times = sorted(float(line.split()[1]) for line in lines if line.startswith("ok "))
    if len(times) < 2:
        raise ValueError("fewer than two successful probes")
    return max(b - a for a, b in zip(times, times[1:], strict=False)) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=0.5)
    args = p.parse_args(argv)
    asyncio.run(run(args.url, args.interval, args.duration, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
