"""`skiff lab` end to end: up, status, exec, apply, down (with the real agent)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from appliances.lab.lab import Lab
from appliances.lab.testing import claimed, new_lab_name

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("needs_lab")]


def skiff(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mgmt.cli", *args], capture_output=True,
                          text=True, timeout=120, input=input)


def _logs(state) -> str:
    return "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}"
                   for log in sorted((state / "logs").glob("*.log")))


def test_help():
    for args in (["lab", "--help"], ["lab", "up", "--help"], ["lab", "exec", "--help"]):
        res = skiff(*args)
        assert res.returncode == 0 and "usage:" in res.stdout


def test_bad_name_is_refused():
    res = skiff("lab", "up", "--name", "Bad-Name")
    assert res.returncode == 2 and "invalid lab name" in res.stderr


def test_unreachable_state_dir_is_refused(tmp_path):
    # pytest's tmp_path sits in a 0700 folder: dnsmasq (user nobody) could not read there.
    name = new_lab_name()
    with claimed(name):
        res = skiff("lab", "up", "--name", name, "--state-dir", str(tmp_path / "s"))
        assert res.returncode == 1 and "other users cannot enter" in res.stderr
        assert skiff("lab", "down", "--name", name).returncode == 0


async def test_cli_life_cycle(tmp_path, host_resolv_conf):
    name = new_lab_name()
    state = Path(tempfile.mkdtemp(prefix=f"skiff-lab-{name}-"))
    common = ["--name", name, "--state-dir", str(state)]
    with claimed(name):
        try:
            res = skiff("lab", "up", *common, "--guests", "1")
            assert res.returncode == 0, res.stderr + _logs(state)
            desc = json.loads(res.stdout)
            assert desc["router"]["id"] == f"r-{name}"
            assert desc["router"]["agent_url"].startswith("https://169.254.")
            assert desc["guests"][0]["lease"] == "10.1.1.11"
            assert json.loads((state / "lab.json").read_text())["name"] == name
            assert "waiting up to" in res.stderr  # progress lines

            res = skiff("lab", "status", *common)
            assert res.returncode == 0, res.stdout + res.stderr
            assert json.loads(res.stdout)["alive"]["agent_health"]["status"] == 200

            res = skiff("lab", "exec", *common, "g1", "--", "sh", "-c", "hostname -I; exit 3")
            assert res.returncode == 3 and "10.1.1.11" in res.stdout
            res = skiff("lab", "exec", *common, "router", "--", "findmnt", "-n", "/run")
            assert res.returncode == 0 and "tmpfs" in res.stdout
            res = skiff("lab", "exec", *common, "nosuch", "--", "true")
            assert res.returncode == 1 and "not a guest name" in res.stderr

            doc = json.loads((state / "lab.json").read_text())["_state"]["document"]
            doc["generation"] += 1
            doc["static_nats"] = [{"public_ip": "203.0.113.11", "guest_ip": "10.1.1.11"}]
            (tmp_path / "doc.json").write_text(json.dumps(doc))
            res = skiff("lab", "apply", *common, str(tmp_path / "doc.json"))
            assert res.returncode == 0, res.stdout + res.stderr
            assert "HTTP 200" in res.stderr
            doc["public_ips"] = []  # invalid: the NAT rules name unknown public IPs
            doc["generation"] += 1
            res = skiff("lab", "apply", *common, "-", input=json.dumps(doc))
            assert res.returncode == 1 and "HTTP 4" in res.stderr
        finally:
            res = skiff("lab", "down", *common)
        assert res.returncode == 0, res.stderr
        assert not state.exists()
        assert await Lab(name).leftovers() == {}
