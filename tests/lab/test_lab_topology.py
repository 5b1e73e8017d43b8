"""The namespace topology is built as described and torn down completely.

Uses a stub agent (answers, configures nothing), so these tests exercise only the lab.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from appliances.lab import netns
from appliances.lab.lab import Lab, LabError
from appliances.lab.testing import (
    claimed,
    cleanup_stale_test_labs,
    new_lab_name,
    running_lab,
    stale_test_labs,
)

HOST_FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("needs_lab")]


async def _nothing_left(name: str) -> None:
    lab = Lab(name)
    assert await lab.leftovers() == {}
    assert not [ns for ns in await netns.list_namespaces() if ns.startswith(f"skf-{name}-")]
    assert not [li for li in await netns.link_names() if li.startswith(f"skf-{name}-")]


async def test_topology(stub_agent, host_resolv_conf):
    host_forwarding = HOST_FORWARDING.read_text()
    async with running_lab(guests=0, agent_cmd=stub_agent) as lab:
        n = lab.names
        desc = lab.describe()
        assert set(desc["namespaces"]) == {"switch", "internet", "router"}
        for ns in desc["namespaces"].values():
            assert netns.namespace_exists(ns)
            assert netns.resolv_conf_path(ns).is_file()
        # Root namespace: only the control bridge and the router's control veth.
        root = [li for li in await netns.link_names() if li.startswith(n.prefix)]
        assert sorted(root) == sorted([n.control_bridge, n.control_veth])
        assert set(await netns.link_names(n.switch)) >= {"guest", "public", "rtr-guest",
                                                         "rtr-public", "internet"}
        # The host reaches the router's control address; forwarding only in the router.
        res = await netns.run(["busybox", "ping", "-c", "1", "-W", "2", lab.control_ip],
                              check=False)
        assert res.ok, res.stdout + res.stderr
        forwarding = await lab.run_in("router", ["cat", "/proc/sys/net/ipv4/ip_forward"])
        assert forwarding.stdout == "1\n"
        assert HOST_FORWARDING.read_text() == host_forwarding
        run_fs = await lab.run_in("router", ["findmnt", "-n", "-o", "FSTYPE", "/run"])
        assert run_fs.stdout.strip() == "tmpfs"
        assert (await lab.run_in("router", ["ip", "-br", "link", "show", "eth1"])).ok
        # The internet: HTTP on 203.0.113.1 and the remote-client addresses, its own DNS.
        res = await lab.run_in("internet", ["busybox", "wget", "-qO-", "http://203.0.113.1/"])
        assert res.stdout.startswith("internet 203.0.113.1:"), res
        res = await lab.run_in("internet", ["busybox", "wget", "-qO-", "http://198.51.100.20/"])
        assert res.stdout.startswith("internet 198.51.100.20:"), res
        for name in ("www.lab.test", "www.internet.test"):
            res = await lab.run_in("internet", ["busybox", "nslookup", name, "203.0.113.1"])
            assert "203.0.113.1" in res.stdout.split("Name:")[-1], res
        # The agent can be restarted (e.g. to test recovery).
        old_pid = lab.pids["agent"]
        await lab.stop_agent()
        assert not netns.pid_alive(old_pid)
        assert await lab.start_agent() != old_pid
        assert (await lab.agent().health()).status == 200
        # Guests can be added (no DHCP from the stub agent) and removed.
        guest = await lab.add_guest(wait=False)
        assert guest.name == "g1" and lab.document.generation == 2
        res = await lab.run_in("g1", ["ip", "-br", "link", "show", "eth0"])
        assert "52:54:00:01:01:0b" in res.stdout
        await lab.remove_guest("g1")
        assert not netns.namespace_exists(n.ns("g1"))
        assert lab.document.generation == 3 and lab.document.dhcp_hosts == []
        name = lab.name
    await _nothing_left(name)


async def test_down_after_crash_without_state(stub_agent, state_root):
    """Build, lose the state folder (a crash), then down from the name alone."""
    name = new_lab_name()
    with claimed(name):
        lab = Lab(name, state_root / "state", agent_cmd=stub_agent)
        await lab.up(guests=0)
        await lab.add_guest(wait=False)
        assert lab.pids
        shutil.rmtree(state_root / "state")
        await Lab(name, state_root / "elsewhere").down()
        await _nothing_left(name)
        for pid in lab.pids.values():
            assert not netns.pid_alive(pid)


async def test_up_replaces_leftovers(stub_agent, state_root):
    name = new_lab_name()
    with claimed(name):
        first = Lab(name, state_root / "a", agent_cmd=stub_agent)
        await first.up(guests=0)
        second = Lab(name, state_root / "b", agent_cmd=stub_agent)
        try:
            await second.up(guests=0)
            assert not netns.pid_alive(first.pids["agent"])
            assert netns.pid_alive(second.pids["agent"])
        finally:
            await second.down()
        await _nothing_left(name)


async def test_agent_that_dies_is_reported(state_root):
    name = new_lab_name()
    with claimed(name):
        lab = Lab(name, state_root / "s", agent_cmd=["false"])
        try:
            with pytest.raises(LabError, match="agent log"):
                await lab.up(guests=0)
        finally:
            await lab.down()
        await _nothing_left(name)


CRASHING_RUN = """
import asyncio, os, signal, sys
from appliances.lab.testing import running_lab

async def main():
    async with running_lab(sys.argv[1], guests=0, agent_cmd=sys.argv[2:]) as lab:
        print("up", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # a test run killed in the middle

asyncio.run(main())
"""


async def test_stale_test_lab_of_a_killed_run_is_cleaned(stub_agent):
    name = new_lab_name()
    res = await netns.run([sys.executable, "-c", CRASHING_RUN, name, *stub_agent], check=False,
                          timeout=120)
    assert res.rc == -9 and "up" in res.stdout, res
    assert netns.namespace_exists(f"skf-{name}-router")
    assert name in await stale_test_labs()
    assert name in await cleanup_stale_test_labs()
    await _nothing_left(name)
    assert not list(Path(tempfile.gettempdir()).glob(f"skiff-lab-{name}-*"))


async def test_live_test_labs_are_spared(stub_agent):
    async with running_lab(guests=0, agent_cmd=stub_agent) as lab:
        assert lab.name not in await stale_test_labs()
        await cleanup_stale_test_labs()
        assert netns.namespace_exists(lab.names.router)
