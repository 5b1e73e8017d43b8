"""Keeps one daemon running as a child of the agent and restarts it if it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class LogLine:
    seq: int
    text: str


class Supervisor:
    """Run ``argv`` in the foreground; restart it with backoff when it exits on its own.

    The daemon's output (stdout and stderr together) is kept in a ring buffer so
    callers can wait for a line that confirms a reload, and for status.
    """

    def __init__(self, name: str, on_event: Callable[[str], None] | None = None):
        self.name = name
        self.argv: Sequence[str] = ()
        self.restarts = 0
        self.last_exit: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None
        self._wanted = False
        self._on_event = on_event or (lambda text: None)
        self._lines: deque[LogLine] = deque(maxlen=500)
        self._seq = 0
        self._new_line = asyncio.Condition()
        self._started_at = 0.0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    @property
    def log_mark(self) -> int:
        """A position in the output; lines after it are "new"."""
        return self._seq

    def tail(self, count: int = 20) -> list[str]:
        return [line.text for line in list(self._lines)[-count:]]

    async def start(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._wanted = True
        await self._spawn()
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watchdog(), name=f"supervise-{self.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        self._wanted = False
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._terminate(timeout)

    async def restart(self, argv: Sequence[str]) -> None:
        await self.stop()
        await self.start(argv)

    def signal(self, sig: int = signal.SIGHUP) -> None:
        if not self.running:
            raise ProcessLookupError(f"{self.name} is not running")
        self._proc.send_signal(sig)

    async def wait_for_line(
        self, predicate: Callable[[str], bool], after: int, timeout: float
    ) -> str:
        """The first output line after mark ``after`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        async with self._new_line:
            while True:
                for line in self._lines:
                    if line.seq > after and predicate(line.text):
                        return line.text
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name} did not confirm within {timeout:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_line.wait(), remaining)

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read(self._proc), name=f"read-{self.name}")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip()
            async with self._new_line:
                self._seq += 1
                self._lines.append(LogLine(self._seq, text))
                self._new_line.notify_all()

    async def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 1.0)
        self._proc = None

    async def _watchdog(self) -> None:
        backoff = 0.2
        while self._wanted:
            proc = self._proc
            if proc is None:
                return
            rc = await proc.wait()
            if not self._wanted:
                return
            self.last_exit = rc
            uptime = time.monotonic() - self._started_at
            backoff = 0.2 if uptime > 30 else min(backoff * 2, 5.0)
            self.restarts += 1
            last = "; ".join(self.tail(3))
            text = f"{self.name} exited with {rc} after {uptime:.1f}s; restarting in {backoff:.1f}s"
            log.warning("%s (last output: %s)", text, last)
            self._on_event(text)
            await asyncio.sleep(backoff)
            if not self._wanted:
                return
            try:
                await self._spawn()
                self._on_event(f"{self.name} restarted (pid {self._proc.pid})")
            except OSError as exc:
                self._on_event(f"{self.name} could not be restarted: {exc}")
                await asyncio.sleep(backoff)

    def status(self) -> dict:
        return {
            "running": self.running,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
