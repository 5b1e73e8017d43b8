"""The guests' udhcpc event script: never touches /etc/resolv.conf, configures the NIC."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from appliances.lab import netns
from appliances.lab.lab import UDHCPC_SCRIPT
from appliances.lab.testing import claimed, new_lab_name


def _run_script(event: str, env: dict[str, str], ns: str | None = None):
    argv = ["sh", str(UDHCPC_SCRIPT), event]
    if ns:
        argv = netns.exec_argv(ns, argv)
    base = {"PATH": os.environ["PATH"], "interface": "eth0"}
    return subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("resolv", [None, "", "/etc/resolv.conf", "/etc/../etc/resolv.conf",
                                    "relative/resolv.conf"])
def test_refuses_host_resolv_conf(resolv, host_resolv_conf):
    env = {"ip": "10.9.0.5", "mask": "24", "dns": "10.9.0.1"}
    if resolv is not None:
        env["SKIFF_RESOLV_CONF"] = resolv
    res = _run_script("bound", env)
    assert res.returncode != 0
    assert "refusing" in res.stderr or "absolute" in res.stderr


def test_refuses_symlink_to_host_resolv_conf(tmp_path, host_resolv_conf):
    link = tmp_path / "resolv.conf"
    link.symlink_to("/etc/resolv.conf")
    res = _run_script("bound", {"ip": "10.9.0.5", "SKIFF_RESOLV_CONF": str(link)})
    assert res.returncode != 0 and "refusing" in res.stderr


def test_script_is_plain_posix_sh():
    text = UDHCPC_SCRIPT.read_text()
    assert "eval" not in text.replace("no eval", "")
    assert subprocess.run(["sh", "-n", str(UDHCPC_SCRIPT)]).returncode == 0


@pytest.fixture
async def nic_ns(needs_lab):
    """A namespace holding one veth pair, eth0 <-> peer0 (named like a test lab's)."""
    name = new_lab_name()
    ns = f"skf-{name}-g1"
    with claimed(name):
        await netns.run(["ip", "netns", "add", ns])
        try:
            await netns.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
            await netns.ip(ns, "link", "set", "peer0", "up")
            yield ns
        finally:
            await netns.run(["ip", "netns", "delete", ns], check=False)


async def _show(ns: str, *args: str) -> str:
    return (await netns.ip(ns, *args)).stdout


@pytest.mark.lab
async def test_bound_renew_deconfig(nic_ns, tmp_path, host_resolv_conf):
    resolv, lease = tmp_path / "resolv.conf", tmp_path / "lease"
    resolv.write_text("old\n")
    inode = resolv.stat().st_ino
    env = {
        "SKIFF_RESOLV_CONF": str(resolv), "SKIFF_LEASE_FILE": str(lease),
        "ip": "10.9.0.5", "subnet": "255.255.255.0", "router": "10.9.0.1",
        "dns": "10.9.0.1 10.9.0.2", "domain": "lab.test", "search": "lab.test other.test",
        "staticroutes": "10.50.0.0/16 10.9.0.254 10.60.1.0/24 10.9.0.253", "mtu": "1400",
    }
    res = _run_script("bound", env, nic_ns)
    assert res.returncode == 0, res.stderr
    assert "10.9.0.5/24" in await _show(nic_ns, "-4", "addr", "show", "eth0")
    assert "mtu 1400" in await _show(nic_ns, "link", "show", "eth0")
    routes = await _show(nic_ns, "-4", "route")
    assert "default via 10.9.0.1 dev eth0" in routes
    assert "10.50.0.0/16 via 10.9.0.254" in routes and "10.60.1.0/24 via 10.9.0.253" in routes
    assert resolv.read_text() == ("# written by the lab's udhcpc.sh for eth0\n"
                                  "search lab.test other.test\n"
                                  "nameserver 10.9.0.1\nnameserver 10.9.0.2\n")
    assert resolv.stat().st_ino == inode, "resolv.conf must be rewritten in place"
    fields = dict(line.split("=", 1) for line in lease.read_text().splitlines())
    assert fields["event"] == "bound" and fields["ip"] == "10.9.0.5" and fields["prefix"] == "24"

    # A renew with fewer routes and no router option removes what is gone.
    env.update(staticroutes="10.50.0.0/16 10.9.0.254", router="", mask="24")
    res = _run_script("renew", env, nic_ns)
    assert res.returncode == 0, res.stderr
    routes = await _show(nic_ns, "-4", "route")
    assert "10.50.0.0/16" in routes
    assert "10.60.1.0" not in routes and "default" not in routes

    res = _run_script("deconfig", env, nic_ns)
    assert res.returncode == 0, res.stderr
    assert "inet " not in await _show(nic_ns, "-4", "addr", "show", "eth0")
    assert Path(resolv).stat().st_ino == inode
