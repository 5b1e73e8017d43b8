"""skiff_mgmt on this machine as an operator runs it: every path under a temporary
folder, a free port, the fallback supervisor (no systemd here). One deployment per
module; the tests run in file order against it and the last one stops it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import uuid

import pytest
import requests
from mgmt_env import DOWN, INVENTORY, PLAYBOOK, Deployment, free_port, wait_until
from playbooks import run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]


def play(deployment: Deployment, playbook=PLAYBOOK, **kwargs):
    return asyncio.run(run_playbook(playbook, INVENTORY, deployment.root,
                                    extra_vars=deployment.vars(), **kwargs))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("mgmt"), f"am{uuid.uuid4().hex[:6]}",
                            free_port())
    try:
        first = play(deployment)
        assert first.rc == 0 and first.failed == 0, first.text[-4000:]
        assert first.changed > 0
        yield deployment
    finally:
        play(deployment, DOWN)
        for pid in deployment.marked_pids():  # a failed stop must not leave a server
            os.kill(pid, signal.SIGKILL)


def test_first_run_serves_a_signed_api_with_the_keys_it_publishes(deployed):
    facts = deployed.facts()
    assert facts["skiff_api_url"] == f"http://127.0.0.1:{deployed.port}/client/api"
    assert facts["skiff_api_ca_cert"] == ""  # loopback: plain HTTP by default
    assert deployed.api().listZones() == {}
    assert deployed.api().listAccounts()["account"][0]["name"] == "admin"
    assert facts["skiff_ssh_public_key"].startswith("ssh-ed25519 ")
    key = os.stat(facts["skiff_ssh_private_key_path"])
    assert stat.S_IMODE(key.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(deployed.root / "etc" / "mgmt.env").st_mode) == 0o600
    # the server and its supervisor carry the lab's mark (skiff lab down ends them)
    assert {deployed.pid(), deployed.pid(child=True)} <= set(deployed.marked_pids())
    # skiff_zone's modules can run with the venv's Python (a remote management host)
    res = subprocess.run([facts["skiff_python"], "-c", "import cs"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_second_run_changes_nothing(deployed):
    again = play(deployed)
    assert again.rc == 0 and again.failed == 0, again.text[-4000:]
    assert again.changed == 0, again.text


def test_the_shipped_mgmt_yml_finds_the_same_state(deployed):
    """ansible/mgmt.yml, the operator's playbook (the tests' mgmt_only.yml is it plus a
    task handing over the facts), changes nothing on this deployment."""
    shipped = play(deployed, "mgmt.yml")
    assert shipped.rc == 0 and shipped.failed == 0, shipped.text[-4000:]
    assert shipped.changed == 0, shipped.text


def test_check_mode_on_the_deployed_machine_reports_no_change(deployed):
    checked = play(deployed, check=True)
    assert checked.rc == 0 and checked.changed == 0, checked.text


def test_the_supervisor_restarts_a_killed_server(deployed):
    supervisor, server = deployed.pid(), deployed.pid(child=True)
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: deployed.pid(child=True) not in (None, server), "a new server process")
    assert deployed.pid() == supervisor
    assert wait_until(lambda: deployed.api().listZones() == {} or True, "the API") is True


def test_a_new_port_restarts_the_server_there(deployed):
    old = deployed.port
    deployed.port = free_port()
    changed = play(deployed)
    assert changed.rc == 0 and changed.changed > 0, changed.text[-4000:]
    assert deployed.facts()["skiff_api_url"].endswith(f":{deployed.port}/client/api")
    assert deployed.api().listZones() == {}
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{old}/client/api", timeout=5)


def test_tls_serves_https_with_the_certificate_it_made(deployed):
    deployed.extra["skiff_api_tls"] = True
    result = play(deployed)
    assert result.rc == 0 and result.changed > 0, result.text[-4000:]
    facts = deployed.facts()
    assert facts["skiff_api_url"] == f"https://127.0.0.1:{deployed.port}/client/api"
    assert facts["skiff_api_ca_cert"] == str(deployed.root / "home" / "tls" / "api.crt")
    assert deployed.api().listZones() == {}  # verified against skiff_api_ca_cert
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{deployed.port}/client/api", timeout=5)
    again = play(deployed)
    assert again.rc == 0 and again.changed == 0, again.text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_rendered_unit_passes_systemd_analyze_verify(deployed):
    assert f"ExecStart={deployed.root}/opt/venv/bin/skiff mgmt serve" in deployed.unit.read_text()
    proc = subprocess.run(["systemd-analyze", "verify", str(deployed.unit)],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_stop_leaves_no_process_and_a_second_stop_changes_nothing(deployed):
    down = play(deployed, DOWN)
    assert down.rc == 0 and down.changed == 1, down.text[-4000:]
    assert deployed.marked_pids() == []
    assert not deployed.pid_file.exists()
    again = play(deployed, DOWN)
    assert again.rc == 0 and again.changed == 0, again.text[-4000:]


def test_check_mode_on_a_fresh_machine_reports_changes_and_makes_nothing(tmp_path):
    fresh = Deployment(tmp_path, f"am{uuid.uuid4().hex[:6]}", free_port())
    result = play(fresh, check=True)
    assert result.rc == 0 and result.failed == 0, result.text[-4000:]
    assert result.changed > 0
    assert not (tmp_path / "home").exists() and not (tmp_path / "opt").exists()
    assert not (tmp_path / "wheels").exists()
