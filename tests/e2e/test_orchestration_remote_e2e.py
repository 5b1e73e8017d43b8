"""A guest network spanning the management server's host and a remote SSH host.

The remote host is a lab namespace running its own sshd; it is added over the
API (addHost with an ssh:// URL pins its host key and prepares it), an instance
is deployed on each host, and traffic crosses between them over VXLAN: the
remote instance gets its lease from the router on the local host, and the two
instances reach each other's HTTP servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
from e2e_traffic import until
from orchestration import cloud
from sqlalchemy import select

from appliances.lab.remote_hosts import add_remote_host
from mgmt.db.models.infra import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "orcr"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        await c.driver().prepare()  # the local fabric carries the underlay
        remote = await add_remote_host(LAB, 1, c.driver().state_dir)
        zone = c.zone
        kvm = (await c.call("addCluster", zoneid=zone.zone["id"], podid=zone.pod["id"],
                            clustername="remote", clustertype="CloudManaged",
                            hypervisor="KVM"))["cluster"][0]
        host = (await c.call("addHost", zoneid=zone.zone["id"], podid=zone.pod["id"],
                             clusterid=kvm["id"], hypervisor="KVM", url=remote.url))["host"][0]
        yield c, remote, host


async def test_add_host_pins_the_key_and_reports_capacity(world):
    c, remote, host = world
    assert host["state"] == "Up" and host["cpunumber"] >= 1 and host["memorytotal"] > 0


    async with c.server.db.sessions() as session:
        pinned = await session.scalar(select(Host.host_key).where(Host.uuid == host["id"]))
    assert pinned == remote.host_key


async def test_a_network_spanning_two_hosts_carries_traffic(world):
    c, remote, host = world
    network = await c.network("span")
    local = await c.deploy(network, "near")
    far = (await c.call("deployVirtualMachine", zoneid=c.zone.zone["id"],
                        serviceofferingid=c.zone.offering["id"],
                        templateid=c.zone.template["id"], networkids=network["id"],
                        name="far", hostid=host["id"]))["virtualmachine"]
    assert far["hostid"] == host["id"] and local["hostid"] != host["id"]
    far_ip, near_ip = far["nic"][0]["ipaddress"], local["nic"][0]["ipaddress"]
    # The remote instance's DHCP lease comes from the router on the local host.
    lease = await until(lambda: remote_lease(remote, far), lambda got: got.get("ip"),
                        timeout=40)
    assert lease["ip"] == far_ip
    body = await until(lambda: c.curl(f"http://{far_ip}/", role=local["instancename"]),
                       lambda got: got, timeout=20)
    assert body.split()[0] == "far"
    back = await c.curl(f"http://{near_ip}/", role=f"host1-{far['instancename']}")
    assert back and back.split()[0] == "near"


async def remote_lease(remote, vm) -> dict[str, str]:
    path = Path(remote.state_dir) / vm["instancename"] / "lease"
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
