"""Routers from the image's root file system archive in the lab runtime (the standalone
lab, and a zone whose system.vm.image names the archive): the image's own Python, agent
and daemons give a guest its DHCP lease and forward a port to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliances.lab.baseline import derive
from appliances.lab.testing import image_agent_root, lab_skip_reason, running_lab
from tests.e2e.e2e_traffic import until
from tests.e2e.orchestration import cloud

pytestmark = [
    pytest.mark.image, pytest.mark.slow, pytest.mark.lab, pytest.mark.timeout(1800),
    pytest.mark.skipif(lab_skip_reason() is not None, reason=lab_skip_reason() or ""),
]

PF_IP = "203.0.113.11"


async def test_router_from_the_rootfs_archive_leases_and_forwards(built_image):
    async with running_lab(guests=1, image=built_image.rootfs) as lab:
        # up() waited for the agent's mutual-TLS health and g1's lease, and applied the
        # baseline: the image's dnsmasq gave g1 its address
        assert lab.has_lease("g1"), lab.lease("g1")
        status = (await lab.agent().status()).body
        assert status["boot"]["ok"] is True
        assert status["boot"]["source"] == "dir:/var/lib/skiff/boot"
        assert status["converged"] is True and status["applied_generation"] == 1
        # the agent and dnsmasq are the image's programs, not this machine's
        pid = lab.pids["agent"]
        assert os.stat(f"/proc/{pid}/root").st_ino != os.stat("/").st_ino
        assert Path(f"/proc/{pid}/root/etc/skiff/image.json").is_file()
        res = await lab.run_in("router", ["cat", "/etc/skiff/image.json"])
        assert res.ok and "skiff-systemvm" in res.stdout, res

        doc = derive(lab.document, port_forwards=[
            {"id": "web", "public_ip": PF_IP, "protocol": "tcp", "public_start": 8080,
             "guest_ip": lab.lease("g1")["ip"], "guest_start": 80}],
            ingress_rules=[{"id": "in-web", "public_ip": PF_IP, "protocol": "tcp",
                            "start_port": 8080}])
        await lab.apply(doc)
        res = await lab.run_in("internet", ["curl", "-s", "--max-time", "5",
                                            f"http://{PF_IP}:8080/"])
        assert res.ok and res.stdout.split()[0] == "g1", res


@pytest.fixture
def server_umask():
    """The umask skiff_mgmt's systemd unit and fallback supervisor give the server (and so
    everything it starts): the appliances must work whatever it is."""
    old = os.umask(0o077)
    yield
    os.umask(old)


async def test_zone_setting_starts_the_networks_router_from_the_archive(built_image, tmp_path,
                                                                        server_umask):
    async with cloud("qimg", tmp_path / "mgmt") as c:
        await c.call("updateConfiguration", name="system.vm.image", value=str(built_image.rootfs),
                     zoneid=c.zone.zone["id"])
        network = await c.network("web")
        vm = await c.deploy(network, "web1")
        [router] = (await c.call("listRouters", networkid=network["id"]))["router"]
        assert router["state"] == "Running"
        root = await image_agent_root(c.ns(router["name"]))
        assert root is not None and (root / "etc/skiff/image.json").is_file()
        lease = await until(lambda: c.lease(vm), lambda got: got.get("ip"), timeout=30)
        assert lease.get("ip") == vm["nic"][0]["ipaddress"], lease
        ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
        await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                     publicport=8080, privateport=80, virtualmachineid=vm["id"])
        body = await c.curl(f"http://{ip['ipaddress']}:8080/")
        assert body and body.split()[0] == "web1", body
        # an instance added later reaches dnsmasq by SIGHUP: it re-reads its hosts file as
        # nobody, through the overlay's / and /var/lib/skiff
        vm2 = await c.deploy(network, "web2")
        lease = await until(lambda: c.lease(vm2), lambda got: got.get("ip"), timeout=30)
        assert lease.get("ip") == vm2["nic"][0]["ipaddress"], lease
