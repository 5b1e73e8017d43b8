"""A router from the image's root file system archive in the lab runtime: the image's own
Python, agent and daemons give a guest its DHCP lease and forward a port to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliances.lab.baseline import derive
from appliances.lab.testing import lab_skip_reason, running_lab

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
