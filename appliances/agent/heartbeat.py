"""The agent's heartbeat sender: its state, signed, to the management server.

A task of its own that only reads the applier's attributes, so it never waits
for (or holds up) an apply. A heartbeat that fails (no route, refused, a 4xx)
is logged and the next one waits longer (doubling up to ``MAX_BACKOFF_S``);
nothing is raised. The wire format is in appliances.common.heartbeat.

The connection is kept alive between heartbeats, and its socket lingers 0 s: when
it closes (or the agent dies) the kernel resets it and frees it at once. A TCP
connection left closing (FIN_WAIT, TIME_WAIT) in the router's network namespace
would keep that namespace alive after ``ip netns delete``, its veths still
forwarding: a router destroyed behind the server's back would go on routing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from appliances.common import certs
from appliances.common import heartbeat as wire

log = logging.getLogger("skiff.agent.heartbeat")

MAX_BACKOFF_S = 60.0
SEQUENCE_FILE = "heartbeat.seq"


def reset_on_close(addr_info: tuple) -> socket.socket:
    """aiohttp's socket factory: a TCP socket that lingers 0 s (see the docstring)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


def short_error(error: Any, limit: int = wire.MAX_ERROR) -> str | None:
    """The applier's or a service's last error (a dict or text) as one short line."""
    if error is None:
        return None
    if isinstance(error, dict):
        text = " ".join(str(error[k]) for k in ("service", "message") if error.get(k))
        text = text or str(error)
    else:
        text = str(error)
    return " ".join(text.split())[:limit] or None


def services_health(services: list) -> dict[str, dict[str, Any]]:
    """Each service's state, health and last error, from what it knows (no daemon
    is asked: a heartbeat never waits)."""
    return {
        service.name: {"state": service.state.state[:16], "healthy": bool(service.healthy()),
                       "last_error": short_error(service.state.last_error,
                                                 wire.MAX_SERVICE_ERROR)}
        for service in services[: wire.MAX_SERVICES]
    }


class HeartbeatSender:
    """POSTs ``state()`` (the heartbeat's fields but the sequence and times) to ``url``
    every ``interval`` seconds, signed with the key in ``key``."""

    def __init__(self, url: str, interval: float, key: Path, cert: Path,
                 state: Callable[[], dict[str, Any]], state_dir: Path):
        self.url = url
        self.interval = interval
        self.key = certs.load_key(Path(key).read_bytes())
        self.cert_pem = Path(cert).read_bytes()
        self.state = state
        self.seq_file = Path(state_dir) / SEQUENCE_FILE
        self.sequence = wire.Sequence(self._stored_sequence())
        self.started = time.monotonic()
        self.sent = 0
        self.failures = 0
        self._task: asyncio.Task | None = None

    def _stored_sequence(self) -> int:
        try:
            return int(self.seq_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _store_sequence(self, value: int) -> None:
        """Best effort, no fsync: the wall clock already keeps a restart's numbers
        higher; the file only covers a clock stepped back across a restart."""
        tmp = self.seq_file.with_name(f".{SEQUENCE_FILE}.tmp")
        try:
            tmp.write_text(f"{value}\n")
            os.replace(tmp, self.seq_file)
        except OSError as exc:
            log.debug("cannot keep the heartbeat sequence in %s: %s", self.seq_file, exc)

    def body(self) -> bytes:
        sequence = self.sequence.next(time.time_ns() // 1000)
        self._store_sequence(sequence)
        beat = wire.Heartbeat(**self.state(), uptime_s=round(time.monotonic() - self.started, 1),
                              sequence=sequence, sent_at=time.time(), interval=self.interval)
        return beat.body()

    async def send_once(self, session: aiohttp.ClientSession) -> None:
        """One heartbeat; raises on any failure (the loop logs it)."""
        body = self.body()
        headers = wire.sign(body, self.key, self.cert_pem)
        async with session.post(self.url, data=body, headers=headers) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:300]
                raise RuntimeError(f"HTTP {resp.status}: {text}")

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval)))
        connector = aiohttp.TCPConnector(socket_factory=reset_on_close, limit=1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                delay = self.interval
                try:
                    await self.send_once(session)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a heartbeat never raises
                    self.failures += 1
                    delay = min(self.interval * 2 ** min(self.failures, 10),
                                max(MAX_BACKOFF_S, self.interval))
                    if self.failures == 1 or self.failures & (self.failures - 1) == 0:
                        log.warning("heartbeat to %s failed (%d in a row; next in %.0f s): %s",
                                    self.url, self.failures, delay,
                                    f"{type(exc).__name__}: {exc}")
                else:
                    if self.failures:
                        log.info("heartbeat to %s works again after %d failures", self.url,
                                 self.failures)
                    self.failures = 0
                    self.sent += 1
                await asyncio.sleep(delay)
