"""skiff_host (netns), skiff_image (a given archive) and skiff_zone against a live
management server, as an operator runs them: the zone they build carries a tenant's
network, an instance and a port forward that serves a page to the lab's Internet;
a second run changes nothing and --check reports nothing to change.

The image here is a stand-in file (the role copies it): routers run from this
checkout's code, so the zone's system.vm.image is left empty for the traffic check and
set at the end only to prove cs_configuration's idempotency. The build path is
tests/ansible/test_image_role.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from playbooks import BIN, run_playbook
from zonelab import PLAYBOOK, local_inventory, stand_in_image, zone_lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_traffic import until  # noqa: E402

from appliances.lab.netns import run  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not (BIN / "ansible-playbook").exists(), reason="no ansible-playbook"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zone-roles")
    async with zone_lab(tmp) as z:
        inventory = local_inventory(z, tmp / "hosts.yml")
        extra = {
            **z.api_vars(),
            "skiff_image_src": str(stand_in_image(tmp / "stand-in.tar.zst")),
            "skiff_image_dir": str(tmp / "images"),
            "skiff_zone_system_vm_image": "",
        }
        first = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env)
        yield z, tmp, inventory, extra, first


async def test_first_run_builds_the_zone(deployed):
    z, tmp, _, _, first = deployed
    assert first.rc == 0 and first.failed == 0 and first.changed > 0, first.text
    assert (tmp / "images" / "stand-in.tar.zst").read_bytes() == (
        tmp / "stand-in.tar.zst"
    ).read_bytes()
    [zone] = (await z.call("listZones", name="zone1"))["zone"]
    assert zone["allocationstate"] == "Enabled" and zone["networktype"] == "Advanced"
    [phys] = (await z.call("listPhysicalNetworks", zoneid=zone["id"]))["physicalnetwork"]
    assert phys["state"] == "Enabled" and phys["isolationmethods"] == "VXLAN"
    traffic = (await z.call("listTrafficTypes", physicalnetworkid=phys["id"]))["traffictype"]
    assert sorted(t["traffictype"] for t in traffic) == ["Guest", "Public"]
    [host] = (await z.call("listHosts", zoneid=zone["id"], type="Routing"))["host"]
    assert (host["name"], host["hypervisor"], host["state"]) == (z.name, "Netns", "Up")
    [vlan] = (await z.call("listVlanIpRanges", zoneid=zone["id"]))["vlaniprange"]
    assert (vlan["startip"], vlan["endip"]) == ("203.0.113.10", "203.0.113.99")


async def test_a_port_forward_in_the_zone_serves_a_page(deployed):
    z, *_ = deployed
    [zone] = (await z.call("listZones", name="zone1"))["zone"]
    [offering] = (await z.call("listServiceOfferings", name="lab-tiny"))["serviceoffering"]
    [template] = (await z.call("listTemplates", templatefilter="all", name="lab-instance"))[
        "template"
    ]
    [netoff] = (
        await z.call(
            "listNetworkOfferings", name=("DefaultIsolatedNetworkOfferingWithSourceNatService")
        )
    )["networkoffering"]
    network = (
        await z.call(
            "createNetwork",
            name="web",
            displaytext="web",
            zoneid=zone["id"],
            networkofferingid=netoff["id"],
        )
    )["network"]
    vm = (
        await z.call(
            "deployVirtualMachine",
            zoneid=zone["id"],
            serviceofferingid=offering["id"],
            templateid=template["id"],
            networkids=network["id"],
            name="web1",
        )
    )["virtualmachine"]
    assert vm["state"] == "Running"
    lease = z.state / z.name / vm["instancename"] / "lease"
    bound = f"ip={vm['nic'][0]['ipaddress']}\n"
    assert bound in await until(lambda: _read(lease), lambda got: bound in got, timeout=120)
    ip = (await z.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
    await z.call(
        "createPortForwardingRule",
        ipaddressid=ip["id"],
        protocol="tcp",
        publicport=8080,
        privateport=80,
        virtualmachineid=vm["id"],
    )
    url = f"http://{ip['ipaddress']}:8080/"

    async def fetch() -> str | None:
        res = await run(
            ["ip", "netns", "exec", f"skf-{z.name}-internet", "curl", "-s", "--max-time", "3", url],
            check=False,
            timeout=10,
        )
        return res.stdout if res.ok else None

    body = await until(fetch, lambda got: got, timeout=120)
    assert body and body.split()[0] == "web1", body


async def test_second_run_changes_nothing_and_check_mode_agrees(deployed):
    z, tmp, inventory, extra, first = deployed
    second = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env)
    assert second.rc == 0 and second.changed == 0, second.text
    check = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=extra, env=z.env, check=True)
    assert check.rc == 0 and check.changed == 0, check.text


async def test_the_zone_setting_system_vm_image_is_set_once(deployed):
    z, tmp, inventory, extra, _ = deployed
    image = str(tmp / "images" / "stand-in.tar.zst")
    with_image = {**extra, "skiff_zone_system_vm_image": image}
    check = await run_playbook(
        PLAYBOOK, inventory, tmp, extra_vars=with_image, env=z.env, check=True
    )
    assert check.rc == 0 and check.changed == 1, check.text
    first = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=with_image, env=z.env)
    assert first.rc == 0 and first.changed == 1, first.text
    [zone] = (await z.call("listZones", name="zone1"))["zone"]
    [setting] = (await z.call("listConfigurations", name="system.vm.image", zoneid=zone["id"]))[
        "configuration"
    ]
    assert setting["value"] == image
    again = await run_playbook(PLAYBOOK, inventory, tmp, extra_vars=with_image, env=z.env)
    assert again.rc == 0 and again.changed == 0, again.text


async def _read(path: Path) -> str:
    return _read_now(path)


def _read_now(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
