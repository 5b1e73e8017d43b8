"""Long-running lab processes (servers, DHCP clients, the agent) started inside namespaces.

They are detached (own session, output to a log file) so they outlive the `skiff lab up`
command that started them. Each carries ``SKIFF_LAB=<lab>`` in its environment, which
``down`` uses to find strays whose namespace has already gone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliances.lab import netns

ENV_MARK = "SKIFF_LAB"

#: Popen handles of processes this Python process started, so they can be reaped.
_children: dict[int, subprocess.Popen] = {}


def spawn(lab: str, ns: str, argv: Sequence[str], log: Path,
          env: Mapping[str, str] | None = None) -> int:
    """Start argv in ns, detached, appending stdout and stderr to log; return its pid.

    `ip netns exec` and everything after it exec in place, so the pid is the daemon's own.
    """
    return spawn_argv(lab, netns.exec_argv(ns, argv), log, env)


def spawn_argv(lab: str, argv: Sequence[str], log: Path,
               env: Mapping[str, str] | None = None) -> int:
    """Start argv as it is, detached, marked as the lab's, output appended to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), ENV_MARK: lab}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def exited(pid: int) -> int | None:
    """Exit code of a child we started that has ended, else None (also for strangers)."""
    proc = _children.get(pid)
    return proc.poll() if proc is not None else None


def reap() -> None:
    """Collect exit statuses of our children that have ended (no zombies left behind)."""
    for pid, proc in list(_children.items()):
        with contextlib.suppress(OSError):
            if proc.poll() is not None:
                del _children[pid]


def tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
