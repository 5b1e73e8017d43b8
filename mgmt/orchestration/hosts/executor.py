"""How a host driver runs commands on its host: locally, or over SSH.

The namespace runtime (mgmt.orchestration.hosts.runtime) is written against
this protocol only, so the same code builds routers and instances on the
management server's own machine (LocalExecutor) and on a remote Linux host
(mgmt.orchestration.hosts.ssh.SshExecutor). Commands are argv lists; an
executor that needs a command string (SSH) quotes every element itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from appliances.common import proc
from appliances.common.files import atomic_write
from appliances.common.proc import Result
from appliances.lab import daemons


class Executor(Protocol):
    #: Label used in error messages and logs ("local", "ssh kvm2.example").
    where: str

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
                  input: str | bytes | None = None) -> Result:
        """Run argv to completion on the host."""
        ...

    async def spawn(self, argv: Sequence[str], *, log: str,
                    env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process detached from the caller (own session, output
        appended to ``log``, a path on the host) and return its pid on the host."""
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a file on the host atomically (temp file, fsync, rename), with mode."""
        ...

    async def close(self) -> None:
        ...


class LocalExecutor:
    """Runs on the management server's own machine."""

    where = "local"

    def __init__(self, mark: str):
        #: Value of SKIFF_LAB in every spawned process: ``skiff lab down --name <mark>``
        #: finds them even when their namespace is gone.
        self.mark = mark

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
                  input: str | bytes | None = None) -> Result:
        return await proc.run(argv, check=check, timeout=timeout, input=input)

    async def spawn(self, argv: Sequence[str], *, log: str,
                    env: Mapping[str, str] | None = None) -> int:
        return daemons.spawn_argv(self.mark, argv, Path(log), env)

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        atomic_write(Path(path), data, mode)

    async def close(self) -> None:
        daemons.reap()
