"""Keeps one daemon running as a child of the agent and restarts it if it dies.

A daemon left behind by a crashed agent would keep its sockets and serve an
old configuration while the next agent's daemon fails to bind, so a pid file
lets the restarted agent find it (same command line) and stop it first. (A
parent-death signal would not do: the kernel clears it when a daemon drops
privileges, as dnsmasq does.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliances.common.files import atomic_write

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

    def __init__(
        self,
        name: str,
        on_event: Callable[[str], None] | None = None,
        pidfile: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.pidfile = pidfile
        #: Extra environment for the daemon (on top of the agent's own).
        self.env = dict(env or {})
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
        self._watchers: list[tuple[Callable[[str], bool], asyncio.Future[str]]] = []
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
        await self._stop_leftover()
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
        """The first output line after mark ``after`` that satisfies ``predicate``.

        Lines that arrive while waiting are tested as they are read, so a burst of
        output larger than the kept tail cannot hide the line waited for.
        """
        for line in self._lines:
            if line.seq > after and predicate(line.text):
                return line.text
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        watcher = (predicate, future)
        self._watchers.append(watcher)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name} did not confirm within {timeout:g}s") from None
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env} if self.env else None,
        )
        self._started_at = time.monotonic()
        if self.pidfile is not None:
            atomic_write(self.pidfile, f"{self._proc.pid}\n")
        self._reader = asyncio.create_task(self._read(self._proc), name=f"read-{self.name}")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip()
            self._seq += 1
            self._lines.append(LogLine(self._seq, text))
            for predicate, future in list(self._watchers):
                if not future.done() and predicate(text):
                    future.set_result(text)

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
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)

    async def _stop_leftover(self, timeout: float = 3.0) -> None:
        """Stop a daemon a crashed agent left running (same command line, from the pid file)."""
        if self.pidfile is None or self.running:
            return
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except (OSError, ValueError, IndexError):
            return
        found = [part.decode(errors="replace") for part in cmdline]
        # Same program (argv[0] may be a full path) and the same arguments, which name
        # our own config file: otherwise the pid was reused by something else.
        if not found or Path(found[0]).name != Path(self.argv[0]).name:
            return
        if found[1:] != list(self.argv[1:]):
            return
        self._on_event(f"stopping a {self.name} left over from a previous agent (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)

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
