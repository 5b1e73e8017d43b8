"""The two-host shape: two lab host namespaces running sshd (``skiff lab remote-hosts``
writes their inventory), skiff_host over SSH with that inventory, and skiff_zone
adding both (next to the management machine's netns host) with the host keys read
over Ansible's authenticated connection pinned; a second run changes nothing, and a
host presenting another key than the URL's ``hostkey=`` is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from urllib.parse import quote

import pytest
import pytest_asyncio
from cs.client import CloudStackApiException
from playbooks import BIN, run_playbook
from zonelab import PLAYBOOK, REPO, stand_in_image, zone_lab

from appliances.lab.netns import run
from appliances.lab.remote_hosts import SSHD

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not (BIN / "ansible-playbook").exists(), reason="no ansible-playbook"),
    pytest.mark.skipif(shutil.which(SSHD) is None, reason="needs openssh-server (make deps)"),
]


async def lab_cli(z, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mgmt.cli",
        "lab",
        *args,
        "--name",
        z.name,
        cwd=REPO,
        env={**os.environ, **z.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-hosts")
    async with zone_lab(tmp) as z:
        inventory = tmp / "inventory" / "hosts.yml"
        await lab_cli(z, "remote-hosts", "--count", "2", "--inventory", str(inventory))
        # the operator's own additions, as host_vars next to the inventory: a bridge and
        # a sysctl in each host's namespace (never the machine's root namespace)
        for host in ("host1", "host2"):
            (inventory.parent / "host_vars").mkdir(exist_ok=True)
            (inventory.parent / "host_vars" / f"{host}.yml").write_text(
                json.dumps(
                    {
                        "skiff_host_bridges": [
                            {"name": "brtest", "mtu": 1400, "address": "10.99.0.1/24"}
                        ],
                        "skiff_host_sysctls": {"net.ipv4.conf.all.send_redirects": "0"},
                    }
                )
            )
        extra = {
            **z.api_vars(),
            "skiff_image_src": str(stand_in_image(tmp / "stand-in.tar.zst")),
            "skiff_image_dir": str(tmp / "images"),
            "skiff_zone_system_vm_image": "",
            "ansible_remote_tmp": str(tmp / "ansible-remote"),
        }
        first = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env)
        yield z, tmp, inventory, extra, first


def _host_key(z, index: int) -> str:
    pub = z.state / z.name / f"host{index}" / "ssh_host_ed25519_key.pub"
    return " ".join(pub.read_text().split()[:2])


async def test_both_hosts_are_up_with_their_own_keys_pinned(deployed):
    z, _, inventory, _, first = deployed
    assert first.rc == 0 and first.failed == 0 and first.changed > 0, first.text
    hosts = {h["name"]: h for h in (await z.call("listHosts", type="Routing"))["host"]}
    data = json.loads(inventory.read_text().split("\n", 1)[1])
    remote = data["all"]["children"]["skiff_hosts"]["hosts"]
    addresses = {remote[k]["ansible_host"]: k for k in ("host1", "host2")}
    assert set(hosts) == {z.name, *addresses}
    assert all(h["state"] == "Up" for h in hosts.values())
    assert {hosts[a]["hypervisor"] for a in addresses} == {"KVM"}
    assert hosts[z.name]["hypervisor"] == "Netns"
    pinned = z.pinned_keys()
    for address, name in addresses.items():
        assert pinned[address] == _host_key(z, int(name[-1]))
    # the management server's key was authorized next to the lab's own
    keys = (z.state / z.name / "host1" / "authorized_keys").read_text()
    assert z.public_key.split()[1] in keys and len(keys.splitlines()) == 2


async def test_bridges_and_sysctls_are_in_the_hosts_namespaces(deployed):
    z, *_ = deployed
    ns = f"skf-{z.name}-host1"
    res = await run(["ip", "-n", ns, "-j", "address", "show", "dev", "brtest"])
    [link] = json.loads(res.stdout)
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == ["10.99.0.1"]
    res = await run(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.conf.all.send_redirects"])
    assert res.stdout.strip() == "0"
    assert (await run(["ip", "link", "show", "brtest"], check=False)).ok is False


async def test_second_run_changes_nothing(deployed):
    z, tmp, inventory, extra, _ = deployed
    second = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env)
    assert second.rc == 0 and second.changed == 0, second.text
    check = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env, check=True)
    assert check.rc == 0 and check.changed == 0, check.text


async def _host1_settings(ns: str) -> tuple[int, str]:
    """brtest's MTU and send_redirects in host1's namespace."""
    res = await run(["ip", "-n", ns, "-j", "link", "show", "dev", "brtest"])
    res2 = await run(["ip", "netns", "exec", ns, "sysctl", "-n",
                      "net.ipv4.conf.all.send_redirects"])
    return json.loads(res.stdout)[0]["mtu"], res2.stdout.strip()


async def test_check_mode_reports_host_changes_and_makes_none(deployed):
    """host1 given a new bridge MTU and sysctl value: --check reports both as changes
    and leaves the host as it is; the next run makes them."""
    z, tmp, inventory, extra, _ = deployed
    ns = f"skf-{z.name}-host1"
    host_vars = inventory.parent / "host_vars" / "host1.yml"
    original = host_vars.read_text()
    host_vars.write_text(json.dumps({
        "skiff_host_bridges": [{"name": "brtest", "mtu": 1450, "address": "10.99.0.1/24"}],
        "skiff_host_sysctls": {"net.ipv4.conf.all.send_redirects": "1"},
    }))
    try:
        check = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env,
                                   check=True)
        assert check.rc == 0 and check.recap["host1"]["changed"] == 2, check.text
        assert check.recap["host2"]["changed"] == 0, check.text
        assert "would set net.ipv4.conf.all.send_redirects=1" in check.text
        assert "would run ip link set dev brtest mtu 1450" in check.text
        assert await _host1_settings(ns) == (1400, "0")
        applied = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env)
        assert applied.rc == 0 and applied.recap["host1"]["changed"] == 2, applied.text
        assert await _host1_settings(ns) == (1450, "1")
    finally:
        host_vars.write_text(original)


async def test_a_host_presenting_another_key_is_refused(deployed):
    """host3 is added with host1's key in its URL: addHost connects, sees host3's own
    key, and refuses it."""
    z, *_ = deployed
    out = await lab_cli(z, "remote-hosts", "--count", "3")
    host3 = json.loads(out)["all"]["children"]["skiff_hosts"]["hosts"]["host3"]
    opts = host3["skiff_host_url_options"]
    url = (
        f"ssh://root@{host3['ansible_host']}:22/?lab={opts['lab']}&prefix={opts['prefix']}"
        f"&statedir={quote(opts['statedir'])}&keyfile={quote(str(z.private_key))}"
        f"&hostkey={quote(_host_key(z, 1), safe='')}"
    )
    # host3 authorizes the server's key as skiff_host would have
    with open(z.state / z.name / "host3" / "authorized_keys", "a") as keys:
        keys.write(z.public_key + "\n")
    [zone] = (await z.call("listZones", name="zone1"))["zone"]
    [pod] = (await z.call("listPods", zoneid=zone["id"]))["pod"]
    [kvm] = (await z.call("listClusters", zoneid=zone["id"], hypervisor="KVM"))["cluster"]
    with pytest.raises(CloudStackApiException) as refused:
        await z.call(
            "addHost",
            zoneid=zone["id"],
            podid=pod["id"],
            clusterid=kvm["id"],
            hypervisor="KVM",
            url=url,
            username="root",
            password="key-in-url",
        )
    assert "host key mismatch" in str(refused.value.error), refused.value.error
    names = {h["name"] for h in (await z.call("listHosts", type="Routing"))["host"]}
    assert host3["ansible_host"] not in names
