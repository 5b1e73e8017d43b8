"""HAProxy's runtime API (the admin stats socket): commands, server state, statistics.

Each call opens the UNIX socket, sends one line of ``;``-separated commands and
reads the answer until HAProxy closes it (non-interactive mode). A command line
must fit HAProxy's buffer (tune.bufsize, 16 kB), so long batches are split.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 12_000
TIMEOUT = 5.0


class RuntimeApiError(RuntimeError):
    pass


async def command(socket: Path, line: str, timeout: float = TIMEOUT) -> str:
    """Send one command line and return HAProxy's whole answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket)), timeout)
    except (OSError, TimeoutError) as exc:
        raise RuntimeApiError(f"cannot reach the HAProxy runtime API at {socket}: {exc}") from None
    try:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        raise RuntimeApiError(f"HAProxy runtime API at {socket}: {exc}") from None
    finally:
        writer.close()
    return data.decode(errors="replace")


def batches(commands: Iterable[str], max_line: int = MAX_LINE) -> list[str]:
    """Join commands with ';' into lines no longer than ``max_line``."""
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for cmd in commands:
        if current and size + len(cmd) + 1 > max_line:
            lines.append(";".join(current))
            current, size = [], 0
        current.append(cmd)
        size += len(cmd) + 1
    if current:
        lines.append(";".join(current))
    return lines


async def run_commands(socket: Path, commands: Sequence[str]) -> list[str]:
    """Run every command; returns the non-empty answers (HAProxy answers nothing on
    success for ``set server``), so any answer is worth reading as a problem."""
    problems = []
    for line in batches(commands):
        answer = (await command(socket, line)).strip()
        if answer:
            problems.append(answer)
    return problems


@dataclass(frozen=True)
class ServerStat:
    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, DRAIN, "no check", UP 1/3 ...
    weight: int
    sessions: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class ProxyStat:
    name: str
    status: str
    sessions: int
    bytes_in: int
    bytes_out: int


def parse_stat(text: str) -> tuple[dict[str, ProxyStat], dict[str, ProxyStat], list[ServerStat]]:
    """``show stat`` CSV -> (frontends, backends, servers)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeApiError(f"unexpected answer to show stat: {text[:200]!r}")
    rows = csv.DictReader([lines[0][2:], *(line for line in lines[1:] if line)])
    frontends: dict[str, ProxyStat] = {}
    backends: dict[str, ProxyStat] = {}
    servers: list[ServerStat] = []
    for row in rows:
        name, kind = row["pxname"], row["svname"]
        numbers = (_int(row.get("scur")), _int(row.get("bin")), _int(row.get("bout")))
        if kind == "FRONTEND":
            frontends[name] = ProxyStat(name, row.get("status", ""), *numbers)
        elif kind == "BACKEND":
            backends[name] = ProxyStat(name, row.get("status", ""), *numbers)
        else:
            servers.append(
                ServerStat(name, kind, row.get("status", ""), _int(row.get("weight")), *numbers)
            )
    return frontends, backends, servers


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


#: Columns of ``show servers state`` (format 1) that the state filter reads or sets.
_BE, _SRV, _ADDR, _ADMIN, _UWEIGHT, _IWEIGHT, _PORT = 1, 3, 4, 6, 7, 8, 18
#: srv_admin_state bit for maintenance forced from the CLI.
_FMAINT = 0x01


@dataclass(frozen=True)
class DesiredServer:
    ip: str
    port: int
    weight: int
    enabled: bool


def carry_server_state(text: str, desired: dict[tuple[str, str], DesiredServer]) -> str:
    """The part of a ``show servers state`` dump worth loading into the new config.

    HAProxy restores a server's address and port from the file too, so a member
    whose address or port changed must be left out (it would come back with the
    old one). For the others the health (operational state, check results) is
    kept and the weight and admin state are set to what the document wants, so a
    reload never resurrects an old runtime setting.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        return "1\n"
    out = [lines[0]]
    for line in lines[1:]:
        if not line or line.startswith("#"):
            out.append(line)
            continue
        fields = line.split(" ")
        if len(fields) <= _PORT:
            continue
        want = desired.get((fields[_BE], fields[_SRV]))
        if want is None or fields[_ADDR] != want.ip or fields[_PORT] != str(want.port):
            continue
        admin = int(fields[_ADMIN]) & ~_FMAINT
        fields[_ADMIN] = str(admin if want.enabled else admin | _FMAINT)
        fields[_UWEIGHT] = fields[_IWEIGHT] = str(want.weight)
        out.append(" ".join(fields))
    return "\n".join(out) + "\n"
