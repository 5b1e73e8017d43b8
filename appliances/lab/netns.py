"""Low-level namespace, link and process operations, each one `ip` (or kill) call.

Every command is an argv list; nothing goes through a shell. Functions that take
``ns=None`` act in the root namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from appliances.common import proc
from appliances.common.proc import CommandError, Result

__all__ = ["CommandError", "Result", "run"]

NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")


async def run(argv: Sequence[str], *, check: bool = True, **kw) -> Result:
    """The project's runner (appliances.common.proc), checking by default."""
    return await proc.run(argv, check=check, **kw)


def ip_argv(ns: str | None, *args: str) -> list[str]:
    return ["ip", *(["-n", ns] if ns else []), *args]


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


async def ip(ns: str | None, *args: str, check: bool = True) -> Result:
    return await run(ip_argv(ns, *args), check=check)


async def run_in(ns: str, argv: Sequence[str], **kw) -> Result:
    return await run(exec_argv(ns, argv), **kw)


# -- namespaces -----------------------------------------------------------------------

async def list_namespaces() -> list[str]:
    res = await run(["ip", "-j", "netns", "list"], check=False)
    if not res.ok or not res.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(res.stdout)]


def namespace_exists(name: str) -> bool:
    return (NETNS_RUN / name).exists()


def resolv_conf_path(ns: str) -> Path:
    """The file `ip netns exec` bind-mounts over /etc/resolv.conf inside ns."""
    return NETNS_ETC / ns / "resolv.conf"


async def add_namespace(name: str) -> None:
    """Create ns with its own resolv.conf (so nothing in it can touch the host's) and lo up."""
    etc = NETNS_ETC / name
    etc.mkdir(parents=True, exist_ok=True)
    resolv_conf_path(name).write_text(f"# {name}: written by the lab's DHCP client\n")
    await run(["ip", "netns", "add", name])
    await ip(name, "link", "set", "lo", "up")


async def delete_namespace(name: str) -> None:
    if namespace_exists(name):
        await run(["ip", "netns", "delete", name], check=False)
    etc = NETNS_ETC / name
    if etc.is_dir():
        for child in etc.iterdir():
            child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            etc.rmdir()


async def namespace_pids(name: str) -> list[int]:
    res = await run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()] if res.ok else []


PidSource = Callable[[], Awaitable[list[int]] | list[int]]


async def _pids(source: PidSource) -> list[int]:
    found = source()
    return await found if inspect.isawaitable(found) else found


async def kill_pids(pids_of: PidSource, grace: float = 3.0) -> list[int]:
    """SIGTERM the pids ``pids_of()`` lists, wait up to grace, then SIGKILL what is left.

    pids_of is asked again after each step (processes come and go); it may be async.
    Returns the pids still alive at the end (normally none).
    """
    pids = await _pids(pids_of)
    if not pids:
        return []
    signal_all(pids, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while pids and loop.time() < deadline:
        await asyncio.sleep(0.1)
        pids = await _pids(pids_of)
    for _ in range(20):
        if not pids:
            break
        signal_all(pids, signal.SIGKILL)
        await asyncio.sleep(0.1)
        pids = await _pids(pids_of)
    return pids


async def kill_namespace_processes(name: str, grace: float = 3.0) -> list[int]:
    return await kill_pids(lambda: namespace_pids(name), grace)


def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def pids_with_env(key: str, value: str) -> list[int]:
    """Processes whose environment holds key=value (finds a lab's strays after a crash)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """True for a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# -- links ------------------------------------------------------------------------------

async def list_links(ns: str | None = None) -> list[dict]:
    res = await run(ip_argv(ns, "-j", "link", "show"), check=False)
    return json.loads(res.stdout) if res.ok and res.stdout.strip() else []


async def link_names(ns: str | None = None) -> list[str]:
    return [link["ifname"] for link in await list_links(ns)]


async def delete_link(name: str, ns: str | None = None) -> None:
    await ip(ns, "link", "delete", name, check=False)


async def add_bridge(name: str, ns: str | None = None) -> None:
    await ip(ns, "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    await ip(ns, "link", "set", name, "up")


async def add_veth(name: str, ns: str | None, peer: str, peer_ns: str | None,
                   peer_mac: str | None = None) -> None:
    """Create a veth pair directly in its two namespaces (nothing transits the root ns)."""
    argv = ["link", "add", name, "type", "veth", "peer", "name", peer]
    if peer_mac:
        argv += ["address", peer_mac]
    if peer_ns:
        argv += ["netns", peer_ns]
    await ip(ns, *argv)


async def set_master(name: str, bridge: str, ns: str | None = None) -> None:
    await ip(ns, "link", "set", name, "master", bridge)


async def set_up(name: str, ns: str | None = None) -> None:
    await ip(ns, "link", "set", name, "up")


async def add_address(name: str, address: str, ns: str | None = None) -> None:
    await ip(ns, "address", "add", address, "dev", name)


async def sysctl(ns: str, key: str, value: str) -> None:
    await run_in(ns, ["sysctl", "-q", "-w", f"{key}={value}"])


async def root_ipv4_networks() -> list[str]:
    """Every IPv4 prefix in use in the root namespace: addresses and routes of all tables."""
    nets: list[str] = []
    res = await run(["ip", "-j", "-4", "addr", "show"], check=False)
    for link in json.loads(res.stdout or "[]"):
        for a in link.get("addr_info", []):
            nets.append(f"{a['local']}/{a['prefixlen']}")
    res = await run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False)
    for route in json.loads(res.stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            nets.append(dst if "/" in dst else f"{dst}/32")
    return nets
