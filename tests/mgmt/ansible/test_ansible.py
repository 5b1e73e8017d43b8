"""Ansible's ngine_io.cloudstack modules against a live server: a first run builds a
zone, physical network, pod, cluster, host, offerings, an account and a network; a
second run of the same playbook reports nothing changed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from cs.client import CloudStack

HERE = Path(__file__).parent
PLAYBOOK = HERE / "playbook.yml"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "ansible-playbook").exists(),
                       reason="ansible-playbook is not installed (pip install ansible==12.3.0)"),
]


def _env(live, tmp_path: Path) -> dict[str, str]:
    """Only what ansible-playbook needs: no user configuration, no network, no colour."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    home = tmp_path / "ansible-home"
    home.mkdir(exist_ok=True)
    return {
        **keep,
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(home / "none.cfg"),  # absent: no ansible.cfg is read
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_GALAXY_SERVER_LIST": "",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "CLOUDSTACK_ENDPOINT": live.url,
        "CLOUDSTACK_KEY": live.admin.apikey,
        "CLOUDSTACK_SECRET": live.admin.secretkey,
        "CLOUDSTACK_TIMEOUT": "30",
    }


async def _play(live, tmp_path: Path) -> tuple[dict[str, int], str]:
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={sys.executable}", str(PLAYBOOK)]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=_env(live, tmp_path), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    recap = re.search(r"^localhost\s*:\s*(.*)$", text, re.MULTILINE)
    assert recap, text
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    return counts, text


def _call(client, name, /, **params):
    return asyncio.to_thread(getattr(client, name), **params)


async def test_playbook_builds_a_cloud_and_is_idempotent(live, tmp_path):
    assert shutil.which("ansible-playbook", path=str(BIN))
    first, text = await _play(live, tmp_path)
    assert first["failed"] == 0 and first["changed"] > 0, text

    cs = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                    fetch_result=True, poll_interval=0.1)
    [zone] = (await _call(cs, "listZones", name="zone1"))["zone"]
    assert zone["allocationstate"] == "Enabled" and zone["networktype"] == "Advanced"
    [phys] = (await _call(cs, "listPhysicalNetworks", zoneid=zone["id"]))["physicalnetwork"]
    assert phys["name"] == "phys1" and phys["vlan"] == "100-199"
    assert phys["state"] == "Enabled"
    providers = (await _call(cs, "listNetworkServiceProviders", physicalnetworkid=phys["id"],
                             name="VirtualRouter"))["networkserviceprovider"]
    assert [p["state"] for p in providers] == ["Enabled"]
    traffic = (await _call(cs, "listTrafficTypes", physicalnetworkid=phys["id"]))["traffictype"]
    assert [t["traffictype"] for t in traffic] == ["Guest"]
    assert [p["name"] for p in (await _call(cs, "listPods", zoneid=zone["id"]))["pod"]] == \
        ["pod1"]
    [cluster] = (await _call(cs, "listClusters", zoneid=zone["id"]))["cluster"]
    assert cluster["name"] == "cluster1" and cluster["hypervisortype"] == "KVM"
    [host] = (await _call(cs, "listHosts", zoneid=zone["id"], type="Routing"))["host"]
    assert host["clusterid"] == cluster["id"]
    assert (await _call(cs, "listServiceOfferings", name="tiny"))["count"] == 1
    assert (await _call(cs, "listDiskOfferings", name="disk10"))["diskoffering"][0][
        "disksize"] == 10
    [account] = (await _call(cs, "listAccounts", name="customer1"))["account"]
    [net] = (await _call(cs, "listNetworks", account="customer1",
                         domainid=account["domainid"]))["network"]
    assert net["name"] == "net1" and net["zoneid"] == zone["id"]
    assert net["networkdomain"] == "customer1.example" and net["state"] == "Allocated"
    assert net["networkofferingname"] == "DefaultIsolatedNetworkOfferingWithSourceNatService"

    second, text = await _play(live, tmp_path)
    assert second["changed"] == 0 and second["failed"] == 0, text
    assert second["ok"] == first["ok"], text
