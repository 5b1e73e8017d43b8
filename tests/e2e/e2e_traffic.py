"""Traffic helpers shared by the end-to-end lab tests: fetch, expect a block, poll,
read the agent's status, follow a long-lived stream."""

from __future__ import annotations

import asyncio
import contextlib

from appliances.lab import netns
from appliances.lab.lab import Lab

OK_TIMEOUT = 3.0  # curl --max-time for connections that must work
FAIL_TIMEOUT = 1.0  # ... and for those that must not (a drop: nothing ever answers)


async def _curl(
    lab: Lab, where: str, url: str, *, src: str | None = None, timeout: float = OK_TIMEOUT
) -> netns.Result:
    argv = ["curl", "-s", "--max-time", str(timeout)]
    if src:
        argv += ["--interface", src]
    return await lab.run_in(where, [*argv, url], timeout=timeout + 10)


async def get(lab: Lab, where: str, url: str, *, src: str | None = None) -> str:
    """The answer of the lab httpd at url, fetched from ``where``; fails if none."""
    res = await _curl(lab, where, url, src=src)
    assert res.ok, f"{where} -> {url} (from {src or 'default'}) failed: {res}"
    return res.stdout.strip()


async def blocked(*checks: tuple) -> None:
    """Each (lab, where, url[, src]) connection fails; tried together (each waits out
    its timeout)."""

    async def one(lab: Lab, where: str, url: str, src: str | None = None) -> None:
        res = await _curl(lab, where, url, src=src, timeout=FAIL_TIMEOUT)
        assert not res.ok, f"{where} -> {url} (from {src or 'default'}) worked: {res.stdout}"

    await asyncio.gather(*(one(*check) for check in checks))


def client_of(answer: str) -> str:
    """The client address in an httpd answer ``<name> <ip>:<port>``."""
    return answer.split()[1].rsplit(":", 1)[0]


def server_of(answer: str) -> str:
    return answer.split()[0]


async def ping(lab: Lab, where: str, ip: str, src: str | None = None) -> bool:
    argv = ["busybox", "ping", "-c", "1", "-W", "1", *(["-I", src] if src else []), ip]
    return (await lab.run_in(where, argv, timeout=10)).ok


async def until(probe, ok, timeout: float = 10.0, interval: float = 0.2):
    """Poll ``await probe()`` until ``ok(result)``; returns the last result either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if ok(result) or loop.time() >= deadline:
            return result
        await asyncio.sleep(interval)


async def _value(value):
    return value


async def status(lab: Lab) -> dict:
    reply = await lab.agent().request("GET", "/v1/status")
    assert reply.status == 200, reply
    return reply.body


class Stream:
    """``curl /stream`` running in a namespace, its lines collected as they arrive."""

    def __init__(self, lab: Lab, where: str, url: str, src: str | None = None):
        self.argv = lab.argv_in(where, ["curl", "-sN", *(["--interface", src] if src else []), url])
        self.lines: list[str] = []

    async def __aenter__(self) -> Stream:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        self.reader = asyncio.create_task(self._read())
        await self.more(1)
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())

    async def more(self, count: int = 2) -> None:
        """Wait (bounded) until ``count`` more lines have arrived."""
        want = len(self.lines) + count
        await until(lambda: _value(len(self.lines)), lambda n: n >= want, timeout=8)
        assert len(self.lines) >= want, f"the stream stopped after {len(self.lines)} lines"

    def one_connection(self) -> bool:
        """Every line came over the same connection, numbered without a gap."""
        seqs = [int(line.split()[-1]) for line in self.lines]
        peers = {line.split()[1] for line in self.lines}
        return len(peers) == 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    async def __aexit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
