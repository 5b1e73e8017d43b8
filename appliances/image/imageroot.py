"""Appliances run from the image's root file system in lab namespaces (no VM).

What a host needs to start an appliance from a built root file system archive
(``<name>-rootfs.tar.zst``) with the image's own Python, agent and daemons and
the host's kernel:

- **one shared extraction per image**: ``<roots>/<sha256 of the archive>``
  (``/var/lib/skiff/image-roots`` or ``$SKIFF_IMAGE_ROOTS``), unpacked once into
  a temporary folder and renamed into place, so concurrent starters never see a
  half-unpacked tree; nothing writes to it afterwards;
- **a writable layer per appliance**: ``<home>/root/upper`` over that tree
  (overlayfs, mounted only inside the appliance's own mount namespace), so the
  appliance may change /etc, /var and the rest like a VM its disk; it survives
  a stop (the agent's last good document is in it) and is dropped when the
  appliance comes back on another image;
- **the boot configuration** in ``<home>/boot``, bound read-only at
  ``/var/lib/skiff/boot``: ``skiff boot --run --lab --source dir:...`` inside
  the image reads it, configures the control interface and becomes the agent;
- a private ``/run``, ``/dev`` (a few device nodes, ``/dev/net/tun``
  for strongSwan's user-space ESP), ``/proc`` and a read-only ``/sys``
  (``appliances.lab.nsinit`` does the mounts, then execs the image's Python).

Everything goes through a ``Host`` (``run`` and ``write_file``), so the same code
serves this machine and a remote host driven over SSH.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliances.common.files import atomic_write
from appliances.common.proc import Result

ROOTS = os.environ.get("SKIFF_IMAGE_ROOTS", "/var/lib/skiff/image-roots")
BOOT_DIR_IN_IMAGE = "/var/lib/skiff/boot"
PYTHON_IN_IMAGE = "/opt/skiff/bin/python"
#: Unpacking ~500 MB of small files takes about 10 s here; a slow disk gets more.
UNPACK_TIMEOUT = 900.0


class ImageRootError(RuntimeError):
    """The archive cannot serve as an appliance's root; the message says why."""


class Host(Protocol):
    """Where the commands run (a host driver's executor, or this machine)."""

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
                  input: str | bytes | None = None) -> Result: ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None: ...


class LocalHost:
    """This machine (the standalone lab)."""

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
                  input: str | bytes | None = None) -> Result:
        from appliances.common import proc

        return await proc.run(argv, check=check, timeout=timeout, input=input)

    async def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        atomic_write(Path(path), data, mode)


#: (host id, archive, size and mtime) -> sha256: hashing 150 MB costs half a second.
_sums: dict[tuple[int, str, str], str] = {}
_locks: dict[str, asyncio.Lock] = {}


async def archive_sha256(host: Host, archive: str) -> str:
    if not archive.startswith("/"):
        raise ImageRootError(f"image {archive!r}: give the archive's absolute path")
    res = await host.run(["stat", "-L", "-c", "%s %Y %F", "--", archive], check=False)
    if not res.ok or not res.stdout.strip().endswith("regular file"):
        raise ImageRootError(f"image {archive}: no such file (build one with make image)")
    key = (id(host), archive, res.stdout.strip())
    if key not in _sums:
        res = await host.run(["sha256sum", "--", archive], check=False, timeout=300)
        if not res.ok:
            raise ImageRootError(f"image {archive}: cannot read it: {res.output[:300]}")
        _sums[key] = res.stdout.split()[0]
    return _sums[key]


async def ensure_root(host: Host, archive: str, roots: str = ROOTS) -> tuple[str, str]:
    """The shared extraction of archive (unpacked now if it is not there yet):
    (its directory, the archive's sha256)."""
    sha = await archive_sha256(host, archive)
    root = f"{roots.rstrip('/')}/{sha}"
    lock = _locks.setdefault(root, asyncio.Lock())
    async with lock:
        if (await host.run(["test", "-d", root], check=False)).ok:
            return root, sha
        tmp = f"{roots.rstrip('/')}/.{sha}.{secrets.token_hex(4)}"
        await host.run(["mkdir", "-p", tmp])
        await host.run(["chmod", "0755", roots, tmp])
        try:
            res = await host.run(["tar", "--extract", "--zstd", f"--file={archive}",
                                  f"--directory={tmp}", "--numeric-owner",
                                  "--preserve-permissions", "--xattrs",
                                  "--xattrs-include=security.capability"],
                                 check=False, timeout=UNPACK_TIMEOUT)
            if not res.ok:
                raise ImageRootError(f"image {archive}: unpacking failed: {res.output[:500]}")
            if not (await host.run(["test", "-x", f"{tmp}{PYTHON_IN_IMAGE}"], check=False)).ok:
                raise ImageRootError(f"image {archive}: not a system-VM root file system "
                                     f"(no {PYTHON_IN_IMAGE} in it)")
            moved = await host.run(["mv", "-T", "--", tmp, root], check=False)
            if not moved.ok and not (await host.run(["test", "-d", root], check=False)).ok:
                raise ImageRootError(f"image {archive}: {moved.output[:300]}")
        finally:
            await host.run(["rm", "-rf", "--", tmp], check=False)
    return root, sha


@dataclass(frozen=True)
class ApplianceRoot:
    """An appliance's own part: its writable layer, the mount point and its boot files."""

    home: str

    @property
    def upper(self) -> str:
        return f"{self.home}/root/upper"

    @property
    def work(self) -> str:
        return f"{self.home}/root/work"

    @property
    def mount(self) -> str:
        return f"{self.home}/root/mnt"

    @property
    def image_file(self) -> str:
        return f"{self.home}/root/image"

    @property
    def boot_dir(self) -> str:
        return f"{self.home}/boot"


async def prepare(host: Host, appliance: ApplianceRoot, sha: str,
                  boot_files: Sequence[tuple[str, bytes, int]]) -> None:
    """The appliance's folders and boot files; a writable layer made over another image
    is dropped (as a system VM is recreated from a new template)."""
    res = await host.run(["cat", appliance.image_file], check=False)
    if res.ok and res.stdout.strip() != sha:
        await host.run(["rm", "-rf", "--", appliance.upper, appliance.work])
    await host.run(["mkdir", "-p", appliance.upper, appliance.work, appliance.mount,
                    appliance.boot_dir])
    # the overlay's root directory takes the upper layer's mode: 0755 as an image's /,
    # whatever the server's umask
    await host.run(["chmod", "0755", appliance.home, f"{appliance.home}/root",
                    appliance.upper, appliance.mount])
    await host.run(["chmod", "0700", appliance.boot_dir])
    await host.write_file(appliance.image_file, f"{sha}\n".encode(), 0o644)
    for name, data, mode in boot_files:
        await host.write_file(f"{appliance.boot_dir}/{name}", data, mode)


#: appliances/lab/nsinit.py needs only the standard library.
NSINIT_FILE = Path(__file__).resolve().parents[1] / "lab" / "nsinit.py"


def nsinit_argv(python: str, local: bool = True) -> list[str]:
    """How to run appliances.lab.nsinit: on this machine as a script without ``site``
    (-S; -P keeps its folder off sys.path), which starts about 20 ms sooner than the
    module with a venv's site-packages; on another host as the installed module."""
    if local and NSINIT_FILE.is_file():
        return [python, "-S", "-P", str(NSINIT_FILE)]
    return [python, "-m", "appliances.lab.nsinit"]


def boot_argv(host_python: str, lower: str, appliance: ApplianceRoot,
              extra: Sequence[str] = (), *, local: bool = True) -> list[str]:
    """The command that starts the appliance in the current network namespace: a private
    mount namespace, the overlay as its root, then the image's ``skiff boot --run``.
    ``local``: host_python is this machine's (see nsinit_argv)."""
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        *nsinit_argv(host_python, local),
        "--overlay", f"{lower}:{appliance.upper}:{appliance.work}",
        "--root", appliance.mount, "--bind-ro", f"{appliance.boot_dir}:{BOOT_DIR_IN_IMAGE}",
        "--tmpfs", "/run", "--clean-env", "--",
        PYTHON_IN_IMAGE, "-m", "appliances.agent.boot", "--run", "--lab",
        "--source", f"dir:{BOOT_DIR_IN_IMAGE}", *extra,
    ]


def roots_in_use(roots: str = ROOTS) -> set[str]:
    """Extractions under roots that a running appliance on this machine has mounted (an
    overlay's lowerdir in some process's mount table)."""
    prefix = f"lowerdir={roots.rstrip('/')}/"
    used: set[str] = set()
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            text = mountinfo.read_text()
        except OSError:
            continue
        for part in text.split(prefix)[1:]:
            used.add(part.split(",", 1)[0].split()[0].split(":", 1)[0])
    return used


def prune(roots: str = ROOTS) -> list[str]:
    """Remove the extractions (and leftovers of interrupted ones) no running appliance on
    this machine uses; returns their names. Run it when no appliance is being started."""
    base = Path(roots)
    if not base.is_dir():
        return []
    used = roots_in_use(roots)
    removed = []
    for entry in sorted(base.iterdir()):
        if entry.is_dir() and entry.name not in used:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
