"""keepalived's notify FIFO (transitions, read by the agent) and the SIGHUP throttle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: keepalived's instance states as the agent names them.
STATES = {"MASTER": "PRIMARY", "BACKUP": "BACKUP", "FAULT": "FAULT", "STOP": "STOPPED"}


def parse_notify(line: str) -> tuple[str, str] | None:
    """``INSTANCE "skiff" MASTER 100`` -> ("skiff", "PRIMARY"); None for other lines."""
    parts = line.strip().split()
    if len(parts) < 3 or parts[0] != "INSTANCE":
        return None
    state = STATES.get(parts[2])
    if state is None:
        return None
    return parts[1].strip('"'), state


def make_fifo(path: Path) -> None:
    """Create the FIFO (0600), replacing anything else that sits at ``path``."""
    try:
        if stat.S_ISFIFO(path.stat().st_mode):
            return
        path.unlink()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path, 0o600)


class FifoReader:
    """Reads lines from a FIFO for as long as it runs and hands each to ``on_line``.

    The FIFO is opened read-write so a writer that closes and reopens it (keepalived
    after a reload or a restart) never makes the reader see end-of-file.
    """

    def __init__(self, path: Path, on_line: Callable[[str], Awaitable[None]]):
        self.path = path
        self.on_line = on_line
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            make_fifo(self.path)
            self._task = asyncio.create_task(self._run(), name="vrrp-notify-fifo")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        pipe = os.fdopen(fd, "rb", buffering=0)
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                try:
                    await self.on_line(raw.decode(errors="replace").rstrip("\n"))
                except Exception:  # one bad transition must not end the reader
                    log.exception("handling %r failed", raw)
        finally:
            transport.close()


class ReloadThrottle:
    """At most one reload per ``min_interval`` seconds; requests in between coalesce.

    keepalived re-reads its whole configuration on SIGHUP and a burst of them can
    make an instance miss adverts (Neutron throttles to 1.5 x the advert interval).
    The first request after a quiet period reloads at once; later ones within the
    interval are folded into one reload at the end of it.
    """

    def __init__(
        self,
        min_interval: float,
        reload: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.min_interval = min_interval
        self._reload = reload
        self._clock = clock
        self._last: float | None = None
        self._pending: asyncio.Task | None = None
        self.sent = 0

    @property
    def pending(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def request(self) -> bool:
        """Reload now or schedule one; True if it was sent at once."""
        if self.pending:
            return False
        now = self._clock()
        if self._last is None or now - self._last >= self.min_interval:
            self._send(now)
            return True
        delay = self._last + self.min_interval - now
        self._pending = asyncio.get_running_loop().create_task(self._later(delay))
        return False

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._send(self._clock())

    def _send(self, now: float) -> None:
        self._last = now
        self.sent += 1
        try:
            self._reload()
        except ProcessLookupError:
            log.warning("reload requested but the daemon is not running")

    async def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
            self._pending = None
