"""Orchestration through the API against a qemu host: the network's router is a VM booted
from the built qcow2 (software emulation here), with its NICs as taps on the fabric's
bridges; an instance (a namespace) gets its address from it, a port forward reaches the
instance, and the VM's agent heartbeats to the server over the control network."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from appliances.image import qemurun
from appliances.lab.testing import lab_skip_reason
from mgmt.db.models.compute import Router, VmInstance
from mgmt.orchestration.hosts.qemu import QemuHostDriver
from tests.e2e.e2e_traffic import until
from tests.e2e.orchestration import cloud

pytestmark = [
    pytest.mark.image, pytest.mark.slow, pytest.mark.lab, pytest.mark.timeout(1800),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
    pytest.mark.skipif(not qemurun.available(), reason="qemu-system-x86_64 missing: "
                       "make image-deps"),
]
LAB = "qorch"


async def _row(c, name: str) -> Router | None:
    async with c.server.db.sessions() as session:
        return await session.scalar(select(Router).join(VmInstance, VmInstance.id == Router.vm_id)
                                    .where(VmInstance.name == name))


async def test_router_vm_serves_an_instance_through_a_port_forward(built_image, tmp_path):
    if built_image.qcow2 is None:
        pytest.skip("built without a qcow2")
    url = f"qemu://{LAB}?image={built_image.qcow2}"
    async with cloud(LAB, tmp_path / "mgmt", host_url=url) as c:
        assert c.zone.host["hypervisor"] == "KVM"
        await c.call("updateConfiguration", name="router.heartbeat.interval", value="1")
        network = await c.network("web")
        vm = await c.deploy(network, "web1")  # boots the router VM first (about a minute)
        assert vm["state"] == "Running"
        [router] = (await c.call("listRouters", networkid=network["id"]))["router"]
        assert router["state"] == "Running"
        qemu = QemuHostDriver.from_url(url)
        assert qemu._pid(router["name"]) is not None, "the router is not a qemu VM"
        assert router["name"] in await qemu.running()

        lease = await until(lambda: c.lease(vm), lambda got: got.get("ip"), timeout=60)
        assert lease.get("ip") == vm["nic"][0]["ipaddress"], lease

        ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
        rule = (await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                             publicport=8080, privateport=80,
                             virtualmachineid=vm["id"]))["portforwardingrule"]
        assert rule["state"] == "Active"
        body = await until(lambda: c.curl(f"http://{ip['ipaddress']}:8080/"),
                           lambda got: got, timeout=30)
        assert body and body.split()[0] == "web1", body

        # the boot configuration carried the heartbeat URL: the VM's agent is heard
        row = await until(lambda: _row(c, router["name"]),
                          lambda r: r is not None and r.last_heartbeat is not None, timeout=30)
        assert row is not None and row.last_heartbeat is not None, "no heartbeat arrived"
        assert row.heartbeat_converged
