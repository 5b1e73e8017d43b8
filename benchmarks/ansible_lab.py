"""Benchmark ``ansible_lab``: a whole lab deployed by ``ansible/lab.yml`` with the
single-machine inventory, as an operator runs it.

* **first_run_s**: from nothing of Skiff on the machine (a new virtual environment,
  an empty state folder, no image and, with ``--cold``, an empty image cache) through
  ``ansible-playbook lab.yml`` to the first page fetched from the lab's Internet
  through a port forward to an instance (tests/ansible/labcheck.py: network,
  instance, public address, forward, all with the ``cs`` client).
* **second_run_s**, **changed_second**: the same playbook again (target: under a
  minute, 0 changed).
* Baselines in the same run: an empty play on localhost (what Ansible itself costs
  per run), and how long the first run's two biggest steps took inside it (the
  image build and the venv install, from the task timings).

The machine's Debian packages are already installed here (``make deps``); the
roles' apt tasks then find them and install nothing, so the first run does not
include their download. What that download costs is measured beside it: the roles'
packages fetched again with ``apt-get --download-only --reinstall`` into the scratch
folder (a lower bound: on a bare machine their dependencies come too).

Everything else goes under one scratch folder (removed at the end, with the lab:
``mgmt-down.yml`` and ``skiff lab down``). Needs root.
Run: ``.venv/bin/python benchmarks/ansible_lab.py [--cold] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "ansible"))

from _common import progress, result_line  # noqa: E402
from labcheck import first_page  # noqa: E402
from playbooks import ansible_env, parse_recap  # noqa: E402

ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
LAB = "abench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_vars(root: Path, port: int, cold: bool) -> dict:
    return {
        "skiff_lab": LAB,
        "skiff_venv": str(root / "opt" / "venv"),
        "skiff_home": str(root / "home"),
        "skiff_log_dir": str(root / "log"),
        "skiff_config_file": str(root / "etc" / "mgmt.env"),
        "skiff_run_dir": str(root / "run"),
        "skiff_systemd_unit_dir": str(root / "systemd"),
        "skiff_wheel_cache": str(root / "wheels"),
        "skiff_api_port": port,
        "skiff_image_dir": str(root / "images"),
        **({"skiff_image_cache": str(root / "image-cache")} if cold else {}),
    }


def play(playbook: Path, root: Path, extra: dict, log: str) -> tuple[float, dict, str]:
    """ansible-playbook with the single-machine inventory; (seconds, recap, output)."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(ANSIBLE / "inventories/single/hosts.yml"),
            str(playbook), "-e", json.dumps(extra)]
    env = ansible_env(root, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    start = time.monotonic()
    res = subprocess.run(argv, cwd=ANSIBLE, env=env, capture_output=True, text=True,
                         check=False)
    took = time.monotonic() - start
    text = res.stdout + res.stderr
    (root / log).write_text(text)
    if res.returncode:
        raise SystemExit(f"{playbook.name} failed (rc {res.returncode}); its output is in "
                         f"{root / log}:\n{text[-3000:]}")
    return took, parse_recap(text), text


ROLE_PACKAGES = (("skiff_mgmt", "skiff_mgmt_packages"), ("skiff_host", "skiff_host_packages"),
                 ("skiff_image", "skiff_image_packages"))


def role_packages() -> list[str]:
    """The Debian packages the roles install when missing (their defaults)."""
    import yaml

    names: set[str] = set()
    for role, var in ROLE_PACKAGES:
        names.update(yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yml")
                                    .read_text())[var])
    return sorted(names)


def apt_download(dest: Path, packages: list[str]) -> tuple[float, float] | None:
    """(seconds, MB) to download packages into dest; None if apt failed."""
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    argv = ["apt-get", "install", "-y", "-qq", "--reinstall", "--download-only",
            "--no-install-recommends", "-o", f"Dir::Cache::archives={dest}", *packages]
    start = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if res.returncode:
        progress(f"apt download failed (rc {res.returncode}): {res.stderr.strip()[-300:]}")
        return None
    size = sum(f.stat().st_size for f in dest.glob("*.deb"))
    return took, size / 1e6


def slowest(text: str, words: tuple[str, ...]) -> float | None:
    """The time profile_tasks gave the first task whose name holds one of ``words``."""
    for line in text.rsplit("PLAY RECAP", 1)[-1].splitlines():
        if any(w in line.lower() for w in words) and line.rstrip().endswith("s"):
            try:
                return float(line.rsplit("-", 1)[-1].strip().rstrip("s"))
            except ValueError:
                continue
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true",
                        help="build the system-VM image with an empty cache (every "
                        "package downloaded) instead of the default cache")
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="skiff-bench-ansible-", dir="/var/tmp"))
    root.chmod(0o755)
    port = free_port()
    extra = lab_vars(root, port, args.cold)
    subprocess.run([str(BIN / "skiff"), "lab", "down", "--name", LAB], check=False,
                   capture_output=True)
    try:
        progress("ansible_lab: an empty play (Ansible's own cost per run)")
        empty = root / "empty.yml"
        empty.write_text("- name: Nothing\n  hosts: all\n  gather_facts: false\n"
                         "  tasks: []\n")
        floor, _, _ = play(empty, root, extra, "empty.log")
        progress(f"empty play {floor:.1f} s; first run of lab.yml (scratch {root})")
        start = time.monotonic()
        deploy, recap1, text1 = play(ANSIBLE / "lab.yml", root, extra, "first.log")
        progress(f"lab.yml {deploy:.1f} s; the cs check (network, instance, forward, page)")
        facts = json.loads((root / "home" / "admin.json").read_text())
        page = first_page(f"http://127.0.0.1:{port}/client/api", facts["apikey"],
                          facts["secretkey"], LAB)
        first = time.monotonic() - start
        if not page.body:
            raise SystemExit(f"no page through {page.url} (logs in {root})")
        progress(f"page from {page.url}: {page.body.split()[0]!r} after {first:.1f} s")
        second, recap2, _ = play(ANSIBLE / "lab.yml", root, extra, "second.log")
        changed = sum(c.get("changed", 0) for c in recap2.values())
        progress("the roles' packages downloaded again (what a bare machine adds)")
        packages = role_packages()
        apt = apt_download(root / "apt-archives", packages)
        image_s = slowest(text1, ("image",))
        venv_s = slowest(text1, ("dependencies", "wheel"))
        print("ansible/lab.yml, inventories/single (this machine; Debian packages present):")
        print(f"  first run to the first page  {first:7.1f} s  (playbook {deploy:.1f} s, "
              f"check {first - deploy:.1f} s; target < 600 s)")
        print(f"    of which the image build   {image_s if image_s is not None else 'na'} s"
              f"{' (empty cache)' if args.cold else ' (default cache)'}")
        print(f"    of which the venv/wheel    {venv_s if venv_s is not None else 'na'} s")
        if apt is None:
            print("    not included: apt download   na (apt-get failed)")
        else:
            print(f"    not included: apt download  {apt[0]:5.1f} s  ({len(packages)} "
                  f"packages, {apt[1]:.0f} MB; their dependencies are here)")
        print(f"  second run                   {second:7.1f} s  changed={changed} "
              f"(target < 60 s, 0 changed)")
        print(f"  baseline: an empty play      {floor:7.1f} s")
        print(f"  first run recap: {recap1}")
        print(result_line("ansible_lab", [("first_run_s", round(first, 1)),
                                          ("second_run_s", round(second, 1)),
                                          ("changed_second", changed)]))
        return 0
    finally:
        if not args.keep:
            subprocess.run([str(BIN / "ansible-playbook"), "-i",
                            str(ANSIBLE / "inventories/single/hosts.yml"),
                            str(ANSIBLE / "mgmt-down.yml"), "-e", json.dumps(extra)],
                           cwd=ANSIBLE, env=ansible_env(root), capture_output=True,
                           check=False)
            subprocess.run([str(BIN / "skiff"), "lab", "down", "--name", LAB], check=False,
                           capture_output=True)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
