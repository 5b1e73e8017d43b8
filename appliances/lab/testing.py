"""Helpers for tests that need a running lab (any test folder can use them).

    from appliances.lab.testing import lab_skip_reason, running_lab

    @pytest.mark.lab
    @pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or "")
    async def test_something():
        async with running_lab(guests=1) as lab:
            res = await lab.run_in("g1", ["busybox", "wget", "-qO-", "http://203.0.113.1/"])

Test labs are named ``t`` plus a random suffix and registered with the pid of the
test process under /run/skiff-lab/owners; leftovers of test labs whose owner is gone
(a crashed or killed run) are removed before a new one is built. Labs of other live
test runs are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import string
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from appliances.lab import netns
from appliances.lab.lab import MARKER, Lab, Progress, check_tools
from appliances.lab.names import check_name

TEST_NAME_RE = re.compile(r"^skf-(t[a-z0-9]{0,5})-")
OWNERS = Path("/run/skiff-lab/owners")
_ALPHABET = string.ascii_lowercase + string.digits


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here (not root, tools missing), or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    try:
        check_tools()
    except RuntimeError as exc:
        return str(exc)
    return None


def new_lab_name() -> str:
    return "t" + "".join(secrets.choice(_ALPHABET) for _ in range(5))


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _claim(name: str) -> None:
    OWNERS.mkdir(parents=True, exist_ok=True)
    (OWNERS / name).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")


def _release(name: str) -> None:
    (OWNERS / name).unlink(missing_ok=True)


@contextlib.contextmanager
def claimed(name: str) -> Iterator[str]:
    """Mark test lab ``name`` as owned by this process (so stale cleanup spares it)."""
    _claim(name)
    try:
        yield name
    finally:
        _release(name)


def _owner_alive(name: str) -> bool:
    try:
        pid_text, start = (OWNERS / name).read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid_text)) == start


async def stale_test_labs() -> set[str]:
    """Names of test labs (skf-t*) that exist but whose owning process is gone."""
    found: set[str] = set()
    candidates = [*await netns.list_namespaces(), *await netns.link_names()]
    if netns.NETNS_ETC.is_dir():
        candidates += [p.name for p in netns.NETNS_ETC.iterdir()]
    for item in candidates:
        m = TEST_NAME_RE.match(item)
        if m:
            found.add(m.group(1))
    if OWNERS.is_dir():
        found |= {p.name for p in OWNERS.iterdir() if re.fullmatch(r"t[a-z0-9]{0,5}", p.name)}
    return {name for name in found if not _owner_alive(name)}


async def cleanup_stale_test_labs(progress: Progress | None = None) -> list[str]:
    """Remove every test lab whose owner is gone; returns their names."""
    removed = []
    for name in sorted(await stale_test_labs()):
        lab = Lab(name, _tmp_state_dirs(name)[0] if _tmp_state_dirs(name) else None,
                  progress=progress)
        await lab.down(quiet=True)
        for d in _tmp_state_dirs(name):
            if (d / MARKER).is_file():
                shutil.rmtree(d, ignore_errors=True)
        _release(name)
        removed.append(name)
    return removed


def _tmp_state_dirs(name: str) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"skiff-lab-{name}-*"))


@contextlib.asynccontextmanager
async def running_lab(
    name: str | None = None,
    guests: int = 2,
    *,
    networks: int = 1,
    redundant: bool = False,
    roadwarrior: bool = False,
    state_dir: str | Path | None = None,
    agent_cmd: Sequence[str] | None = None,
    progress: Progress | None = None,
    keep_logs_on_error: bool = True,
    image: str | Path | None = None,
) -> AsyncIterator[Lab]:
    """Build a lab, yield it, and always take it down again.

    If the body (or up) fails, the lab's logs are copied to a temp folder first and
    the exception gets a note naming it. ``image`` (else ``$SKIFF_LAB_IMAGE``, unless
    an agent_cmd is given) runs the routers from that system-VM root file system
    archive: ``SKIFF_LAB_IMAGE=build/out/skiff-systemvm-rootfs.tar.zst pytest
    tests/e2e`` runs the lab tests against the image's own daemons.
    """
    if image is None and agent_cmd is None:
        image = os.environ.get("SKIFF_LAB_IMAGE") or None
    name = check_name(name or new_lab_name())
    _claim(name)
    try:
        await cleanup_stale_test_labs(progress)
        state_dir = Path(state_dir or tempfile.mkdtemp(prefix=f"skiff-lab-{name}-"))
        lab = Lab(name, state_dir, agent_cmd=agent_cmd, image=image,
                  progress=progress or (lambda msg: print(f"lab {name}: {msg}",
                                                          file=sys.stderr)))
        try:
            await lab.up(guests=guests, networks=networks, redundant=redundant,
                         roadwarrior=roadwarrior)
            yield lab
        except BaseException as exc:
            if keep_logs_on_error and lab.log_dir.is_dir():
                saved = Path(tempfile.mkdtemp(prefix=f"skiff-lab-logs-{name}-"))
                shutil.copytree(lab.log_dir, saved, dirs_exist_ok=True)
                exc.add_note(f"lab {name} logs kept in {saved}")
            raise
        finally:
            await lab.down(quiet=True)
    finally:
        _release(name)


async def image_agent_root(ns: str) -> Path | None:
    """/proc/<pid>/root of the image's agent (its ``skiff boot --run``) in namespace ns:
    the root file system an appliance started from the system-VM image runs in; None
    when no such process runs there (e.g. a router from this checkout)."""
    res = await netns.run(["ip", "netns", "pids", ns], check=False)
    for pid in res.stdout.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"appliances.agent.boot" in cmdline:
            return Path(f"/proc/{pid}/root")
    return None
