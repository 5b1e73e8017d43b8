"""Run a playbook of ansible/ as an operator would, and read its recap.

Only what ansible-playbook needs reaches it: ansible/ansible.cfg, no user
configuration, no Galaxy, no colour; the venv's own Python on the managed hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK_TIMEOUT = 1800.0


@dataclass
class PlayResult:
    rc: int
    #: Per host: ok, changed, unreachable, failed, skipped, rescued, ignored.
    recap: dict[str, dict[str, int]]
    text: str

    @property
    def changed(self) -> int:
        return sum(counts.get("changed", 0) for counts in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(counts.get("failed", 0) + counts.get("unreachable", 0)
                   for counts in self.recap.values())


def ansible_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    home = tmp_path / "ansible-home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        **keep,
        "PATH": f"{BIN}{os.pathsep}{keep.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_GALAXY_SERVER_LIST": "",
        **extra,
    }


def parse_recap(text: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP block: ``host : ok=3 changed=0 ...`` per host."""
    recap: dict[str, dict[str, int]] = {}
    block = text.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in text else ""
    for line in block.splitlines():
        found = re.match(r"^(\S+)\s*:\s*(ok=.*)$", line.strip())
        if found:
            recap[found.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)",
                                                                     found.group(2))}
    return recap


async def run_playbook(playbook: str | Path, inventory: str | Path, tmp_path: Path, *,
                       extra_vars: dict | None = None, check: bool = False,
                       diff: bool = False, env: dict[str, str] | None = None,
                       timeout: float = PLAYBOOK_TIMEOUT) -> PlayResult:
    """ansible-playbook ``playbook`` (relative to ansible/) against ``inventory``."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ANSIBLE / playbook)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ANSIBLE, env={**ansible_env(tmp_path), **(env or {})},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (tmp_path / f"{Path(playbook).stem}{'-check' if check else ''}.log").write_text(text)
    return PlayResult(proc.returncode if proc.returncode is not None else -1,
                      parse_recap(text), text)
