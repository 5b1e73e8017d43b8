"""The ssh host driver against lab remote hosts (namespaces running their own sshd).

A local fabric (NetnsHostDriver) plus remote host ``host1`` on the lab's underlay: a
guest segment plugged on both with each other as VXLAN peer carries traffic between an
instance on each. Every test ends with the lab's down, which must leave nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import asyncssh
import pytest
from aiohttp import web

from appliances.common import heartbeat as wire
from appliances.lab.agentclient import AgentClient
from appliances.lab.lab import Lab
from appliances.lab.remote_hosts import (
    SSHD,
    RemoteHost,
    add_remote_host,
    remove_remote_host,
)
from appliances.lab.testing import claimed, cleanup_stale_test_labs, new_lab_name
from appliances.router.verify import parse_document
from mgmt.db.engine import open_database
from mgmt.orchestration.hosts.driver import (
    PUBLIC_VNI,
    HostError,
    InstancePlan,
    NicPlan,
    RouterPlan,
)
from mgmt.orchestration.hosts.netns import NetnsHostDriver
from mgmt.orchestration.hosts.ssh import (
    SshExecutor,
    SshHostDriver,
    fetch_host_key,
    fingerprint,
    host_key_text,
    parse_host_key,
)
from mgmt.orchestration.pki import ApplianceCA

ROOT = Path(__file__).resolve().parents[2]
VNI = 4242
pytestmark = [
    pytest.mark.lab,
    pytest.mark.usefixtures("needs_lab"),
    pytest.mark.skipif(shutil.which(SSHD) is None, reason="needs openssh-server (make deps)"),
]


@contextlib.asynccontextmanager
async def local_fabric():
    """A prepared NetnsHostDriver on a fresh test lab; the lab's down afterwards."""
    name = new_lab_name()
    with claimed(name):
        await cleanup_stale_test_labs()
        state = Path(tempfile.mkdtemp(prefix=f"skiff-lab-{name}-"))
        state.chmod(0o755)
        local = NetnsHostDriver(name, state)
        try:
            await local.prepare()
            yield local
        finally:
            await local.close()
            await Lab(name, state).down(quiet=True)  # raises if anything is left


def executor(host: RemoteHost, **kw) -> SshExecutor:
    args = {
        "host_key": host.host_key,
        "key_path": host.key_path,
        "mark": host.lab,
        "python": sys.executable,
        "env": {"PYTHONPATH": str(ROOT)},
    } | kw
    return SshExecutor(host.address, port=host.port, username=host.username, **args)


class HeartbeatLog:
    """A heartbeat sink for the driver: a loopback listener that verifies each
    heartbeat against the CA and keeps it."""

    def __init__(self, ca: ApplianceCA):
        self.ca = ca
        self.beats: list[wire.Heartbeat] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def bind(self, address: str, port: int) -> int:
        assert address == "127.0.0.1"  # the SSH reverse forward ends on loopback
        if self.runner is None:
            app = web.Application()
            app.router.add_post(wire.PATH, self._post)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, address, port).start()
            self.port = self.runner.addresses[0][1]
        return self.port

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.beats.append(wire.verify(body, request.headers, self.ca.cert))
        return web.Response(status=204)

    async def heard(self, after: int) -> None:
        for _ in range(300):
            if len(self.beats) > after:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no heartbeat after the first {after}")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def remote_driver(host: RemoteHost) -> SshHostDriver:
    """As the orchestrator makes it: from the host row addHost wrote."""
    row = SimpleNamespace(
        name=host.name, url=host.url, username=None, password=None, host_key=host.host_key
    )
    return SshHostDriver.for_host(row)


async def test_remote_host_runs_its_own_sshd():
    async with local_fabric() as local:
        lab = local.lab
        host = await add_remote_host(lab, 1, local.state_dir)
        assert host.namespace == f"skf-{lab}-host1"
        assert await fetch_host_key(host.address) == host.host_key
        assert Path(host.key_path).stat().st_mode & 0o777 == 0o600
        again = await add_remote_host(lab, 1, local.state_dir)
        assert again == host

        # sshd listens on the host's own address only, and not in the root namespace.
        x = local.x
        res = await x.run(["ip", "netns", "exec", host.namespace, "ss", "-ltnH"])
        assert [line.split()[3] for line in res.stdout.splitlines()] == [f"{host.address}:22"]
        assert f"{host.address}:22" not in (await x.run(["ss", "-ltnH"])).stdout

        # A session runs in the host's namespace; namespaces it makes are visible here
        # under the host's prefix (so the lab's down finds them).
        ssh = executor(host)
        try:
            res = await ssh.run(["ip", "-4", "-o", "address", "show", "dev", "eth0"])
            assert f"inet {host.address}/24" in res.stdout
            await ssh.run(["ip", "netns", "add", f"{host.prefix}probe"])
            assert f"{host.prefix}probe" in await local.runtime.namespaces()
        finally:
            await ssh.close()

        await remove_remote_host(lab, 1, local.state_dir)
        left = {ns for ns in await local.runtime.namespaces() if ns.startswith(host.namespace)}
        assert left == set()
        with pytest.raises(HostError, match="cannot read the host key"):
            await fetch_host_key(host.address, timeout=5)


async def test_a_wrong_pinned_host_key_is_refused():
    async with local_fabric() as local:
        host = await add_remote_host(local.lab, 1, local.state_dir)
        other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
        driver = SshHostDriver(
            executor(host, host_key=host_key_text(other)),
            prefix=host.prefix,
            state_dir=host.state_dir,
        )
        try:
            with pytest.raises(HostError) as err:
                await driver.prepare()
        finally:
            await driver.close()
        text = str(err.value)
        assert "host key mismatch" in text and host.address in text
        assert fingerprint(other) in text
        assert fingerprint(parse_host_key(host.host_key)) in text
        # Nothing was done on the host.
        assert not Path(host.state_dir).exists()


async def _until_lease_event(get, name: str) -> None:
    """Wait until the instance's DHCP client has started (its first event is deconfig,
    which flushes eth0: static addresses go on after it)."""
    for _ in range(300):
        if (await get(name)).get("event"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}: the DHCP client never reported")


async def _curl(run, ns: str, url: str) -> str:
    """The body of url fetched from ns, once the server answers."""
    for _ in range(100):
        res = await run(ns, ["curl", "-s", "--max-time", "3", url], check=False)
        if res.ok and res.stdout:
            return res.stdout
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered from {ns}")


async def test_a_segment_spans_the_local_and_a_remote_host():
    async with local_fabric() as local:
        host = await add_remote_host(local.lab, 1, local.state_dir)
        remote = remote_driver(host)
        try:
            here = await local.prepare()
            there = await remote.prepare()
            assert there.underlay_ip == host.address and there.cpus >= 1
            assert here.underlay_ip and here.underlay_ip != there.underlay_ip

            await local.plug_segment(VNI, (there.underlay_ip,))
            await remote.plug_segment(VNI, (here.underlay_ip,))
            await remote.plug_segment(VNI, (here.underlay_ip,))  # idempotent

            a = InstancePlan(
                "i-1-1-VM", "vm-local", (NicPlan("eth0", "02:00:00:42:00:01", "guest", VNI),)
            )
            b = InstancePlan(
                "i-1-2-VM", "vm-remote", (NicPlan("eth0", "02:00:00:42:00:02", "guest", VNI),)
            )
            await local.start_instance(a)
            await remote.start_instance(b)
            assert await remote.running() == {"i-1-2-VM"}
            assert "i-1-2-VM" not in await local.running()

            # No router, so no DHCP: static addresses once the DHCP clients have started.
            await _until_lease_event(local.lease, a.name)
            await _until_lease_event(remote.lease, b.name)
            ns_a, ns_b = local.runtime.ns(a.name), remote.runtime.ns(b.name)
            await local.runtime.ip(ns_a, "address", "add", "10.77.0.1/24", "dev", "eth0")
            await remote.runtime.ip(ns_b, "address", "add", "10.77.0.2/24", "dev", "eth0")

            body = await _curl(local.runtime.in_ns, ns_a, "http://10.77.0.2/")
            assert body.startswith("vm-remote 10.77.0.1:")
            body = await _curl(remote.runtime.in_ns, ns_b, "http://10.77.0.1/")
            assert body.startswith("vm-local 10.77.0.2:")
            # Full-size packets cross: 1472 bytes of ICMP data make a 1500-byte packet.
            res = await local.runtime.in_ns(
                ns_a,
                ["busybox", "ping", "-c", "1", "-W", "3", "-s", "1472", "10.77.0.2"],
                check=False,
            )
            assert res.ok, res.output
            # The VXLAN is the only path: without the peer the remote server is unreachable.
            await local.plug_segment(VNI, ())
            res = await local.runtime.in_ns(
                ns_a, ["curl", "-s", "--max-time", "2", "http://10.77.0.2/"], check=False
            )
            assert not res.ok

            await remote.destroy(b.name)
            await remote.unplug_segment(VNI)
            assert await remote.running() == set()
            assert f"s{VNI}" not in await remote.runtime.links(None)
        finally:
            await remote.close()


@pytest.mark.slow
async def test_a_router_on_a_remote_host_serves_a_local_instance(tmp_path):
    """The router runs on host1; its agent is reached through the SSH port forward and its
    heartbeats come back through the reverse one. Its guest and public segments span
    both hosts, so an instance on the local host gets its lease from it and reaches the
    lab's internet (local) through its source NAT."""
    db = await open_database(f"sqlite+skiff:///{tmp_path}/ca.db")
    try:
        ca = await ApplianceCA.load(db, tmp_path)
    finally:
        await db.close()
    async with local_fabric() as local:
        host = await add_remote_host(local.lab, 1, local.state_dir)
        remote = remote_driver(host)
        sink = HeartbeatLog(ca)
        try:
            here, there = await local.prepare(), await remote.prepare()
            for vni in (VNI, PUBLIC_VNI):
                await local.plug_segment(vni, (there.underlay_ip,))
                await remote.plug_segment(vni, (here.underlay_ip,))

            name = "r-9-VM"
            net = remote.control_network
            control = ipaddress.IPv4Interface(f"{net.network_address + 2}/{net.prefixlen}")
            macs = {
                "eth0": "02:00:00:09:00:01",
                "eth1": "02:00:00:09:00:02",
                "eth2": "02:00:00:09:00:03",
            }
            plan = RouterPlan(
                name,
                (
                    NicPlan("eth0", macs["eth0"], "guest", VNI),
                    NicPlan("eth1", macs["eth1"], "control"),
                    NicPlan("eth2", macs["eth2"], "public", PUBLIC_VNI),
                ),
                control,
                ca.issue_agent(name, str(control.ip)),
                heartbeat_url=await remote.heartbeat_url(sink),
                heartbeat_interval=0.5,
            )
            assert plan.heartbeat_url == f"http://{net.network_address + 1}:8250{wire.PATH}"
            endpoint = await remote.start_router(plan)
            assert endpoint.host == "127.0.0.1"
            assert await remote.agent_endpoint(name, str(control.ip)) == endpoint  # reused
            client = AgentClient(endpoint.url, name, ca.client_context())
            await client.wait_healthy(60)
            await sink.heard(0)
            assert sink.beats[0].appliance_id == name
            # The SSH connection drops: the next endpoint is a new forward on the same port,
            # and the heartbeats' reverse forward is made again on the same port too.
            conn = await remote.x.connection()
            conn.abort()
            await conn.wait_closed()
            assert await remote.agent_endpoint(name, str(control.ip)) == endpoint
            await client.wait_healthy(30)
            assert await remote.heartbeat_url(sink) == plan.heartbeat_url
            await sink.heard(len(sink.beats))

            vm_mac = "02:00:00:09:01:01"
            await client.apply(
                parse_document(
                    {
                        "router_id": name,
                        "generation": 1,
                        "interfaces": [
                            {
                                "role": "guest",
                                "name": "eth0",
                                "mac": macs["eth0"],
                                "addresses": ["10.1.1.1/24"],
                            },
                            {
                                "role": "control",
                                "name": "eth1",
                                "mac": macs["eth1"],
                                "addresses": [str(control)],
                            },
                            {
                                "role": "public",
                                "name": "eth2",
                                "mac": macs["eth2"],
                                "addresses": ["203.0.113.10/24"],
                                "gateway": "203.0.113.1",
                            },
                        ],
                        "guest_network": {
                            "cidr": "10.1.1.0/24",
                            "gateway": "10.1.1.1",
                            "domain": "cs1cloud.internal",
                            "upstream_resolvers": ["203.0.113.1"],
                        },
                        "public_ips": [{"ip": "203.0.113.10", "source_nat": True}],
                        "dhcp_hosts": [{"mac": vm_mac, "ip": "10.1.1.20", "hostname": "vm1"}],
                    }
                )
            )

            vm = InstancePlan("i-2-3-VM", "vm1", (NicPlan("eth0", vm_mac, "guest", VNI),))
            await local.start_instance(vm)
            lease: dict[str, str] = {}
            for _ in range(300):
                lease = await local.lease(vm.name)
                if lease.get("ip"):
                    break
                await asyncio.sleep(0.1)
            assert (lease.get("ip"), lease.get("router")) == ("10.1.1.20", "10.1.1.1")
            body = await _curl(
                local.runtime.in_ns, local.runtime.ns(vm.name), "http://203.0.113.1/"
            )
            assert body.startswith("internet 203.0.113.10:")

            await remote.destroy(name)
            with pytest.raises((OSError, aiohttp.ClientError, TimeoutError)):
                await client.health(timeout=3)
        finally:
            await remote.close()
            await sink.close()
