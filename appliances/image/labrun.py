"""Run an appliance from the image's root file system in lab namespaces (no VM).

The small, synchronous building block the image test and benchmark use: an
appliance namespace and a management-side namespace joined by the control veth,
so nothing of it touches the host's own namespace, and the appliance started as
the lab runtime starts one (appliances.image.imageroot: the image's own Python,
agent and daemons over an overlay of the archive's shared extraction, the boot
configuration as ``dir:``). Names carry the lab prefix ``skf-<lab>-`` (so
``skiff lab down --name <lab>`` finds leftovers).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliances.image import imageroot
from appliances.lab.names import NAME_RE


def unpack(archive: Path, target: Path) -> Path:
    """Unpack a rootfs .tar.zst (owners, modes and file capabilities kept)."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--extract", "--zstd", f"--file={archive}", f"--directory={target}",
                    "--numeric-owner", "--preserve-permissions", "--xattrs",
                    "--xattrs-include=security.capability"], check=True)
    return target


@dataclass(frozen=True)
class LabLink:
    """Where the appliance is (``ns``) and where its management side is (``peer_ns``)."""

    lab: str
    device: str

    @property
    def ns(self) -> str:
        return f"skf-{self.lab}-vm"

    @property
    def peer_ns(self) -> str:
        return f"skf-{self.lab}-mg"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def create(lab: str, device: str, peer_address: str) -> LabLink:
    """Both namespaces and the control veth (``device`` in the appliance; the peer end,
    with peer_address, in the management namespace)."""
    if not NAME_RE.match(lab):
        raise ValueError(f"lab name {lab!r}: 1-6 lowercase letters and digits")
    link = LabLink(lab, device)
    for ns in (link.ns, link.peer_ns):
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", link.peer_ns, "link", "add", "ctl", "type", "veth", "peer", "name", device,
        "netns", link.ns)
    _ip("-n", link.peer_ns, "address", "add", peer_address, "dev", "ctl")
    _ip("-n", link.peer_ns, "link", "set", "ctl", "up")
    return link


def prepare(archive: Path, home: Path,
            boot_files: Sequence[tuple[str, bytes, int]]) -> tuple[str, imageroot.ApplianceRoot]:
    """The archive's shared extraction (unpacked on first use) and the appliance's own
    folders under home with its boot files: (the extraction, the appliance root)."""
    async def _prepare() -> tuple[str, imageroot.ApplianceRoot]:
        host = imageroot.LocalHost()
        lower, sha = await imageroot.ensure_root(host, str(archive))
        root = imageroot.ApplianceRoot(str(home))
        await imageroot.prepare(host, root, sha, boot_files)
        return lower, root

    return asyncio.run(_prepare())


def start(link: LabLink, lower: str, root: imageroot.ApplianceRoot, log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """The image's ``skiff boot --run --lab`` in the appliance's namespaces, as the lab
    runtime starts it."""
    argv = ["ip", "netns", "exec", link.ns, *imageroot.boot_argv(sys.executable, lower, root)]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})


def get(link: LabLink, url: str, ca: Path | None = None, cert: Path | None = None,
        key: Path | None = None) -> tuple[int, dict]:
    """GET url from the management namespace with curl (mutual TLS when given files)."""
    tls = [] if ca is None else ["--cacert", str(ca), "--cert", str(cert), "--key", str(key)]
    res = subprocess.run(["ip", "netns", "exec", link.peer_ns, "curl", "-s", "-m", "2",
                          "-w", "\n%{http_code}", *tls, url], capture_output=True, text=True,
                         check=False)
    return parse_curl(res.stdout)


def parse_curl(output: str) -> tuple[int, dict]:
    """curl -w '\\n%{http_code}' output -> (status, JSON body); status 0: no answer."""
    body, _, code = output.rpartition("\n")
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        data = {"raw": body}
    return (int(code) if code.isdigit() else 0), data


def wait_ready(link: LabLink, url: str, proc: subprocess.Popen, timeout: float = 60.0,
               **tls: Path) -> tuple[int, dict]:
    """Poll url until it answers (any HTTP status) or the process ends; bounded."""
    deadline = time.monotonic() + timeout
    code, data = 0, {}
    while time.monotonic() < deadline and proc.poll() is None:
        code, data = get(link, url, **tls)
        if code:
            return code, data
        time.sleep(0.01)  # the answer's time is what is measured: poll closely
    return code, data


def destroy(link: LabLink, proc: subprocess.Popen | None) -> None:
    """Stop everything in the namespaces and delete them."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for ns in (link.ns, link.peer_ns):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=False).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-KILL", pid], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
