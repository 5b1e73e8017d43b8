"""System VMs end to end: the zone gets its storage VM and console proxy by itself, the
console of a deployed instance opens through the console proxy's public address from
the lab's Internet, and a console proxy destroyed behind the server's back comes back.

One zone for the module (built through the API with the cs client, as any operator
would); the instances carry real VNC displays (Xvfb and x11vnc on the host's control
address), each showing a colour of its own (appliances.lab.vncserver.colour_of).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from cs.client import CloudStackApiException
from e2e_traffic import until
from orchestration import cloud

from appliances.console.testing import x11_skip_reason
from appliances.lab.netns import run
from appliances.lab.vncserver import colour_of
from mgmt.orchestration import console, systemvms

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(x11_skip_reason() is not None, reason=x11_skip_reason() or ""),
]
LAB = "svm"
VIEWER = Path(__file__).with_name("console_viewer.py")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        network = await c.network("desk")
        vm1 = await c.deploy(network, "desk1")
        vm2 = await c.deploy(network, "desk2")
        yield c, vm1, vm2


async def system_vms(c, **filters) -> dict[str, dict]:
    """The zone's system VMs by systemvmtype."""
    listed = (await c.call("listSystemVms", **filters)).get("systemvm", [])
    return {s["systemvmtype"]: s for s in listed}


async def running_pair(c, timeout: float = 120) -> dict[str, dict]:
    def both_up(found: dict[str, dict]) -> bool:
        return len(found) == 2 and all(
            s["state"] == "Running" and s.get("agentstate") == "Up" for s in found.values()
        )

    found = await until(lambda: system_vms(c), both_up, timeout=timeout, interval=0.5)
    assert both_up(found), found
    return found


async def view(c, url: str, hold: float = 0.0) -> dict:
    """What the console viewer in the lab's Internet saw through url."""
    res = await run(
        [
            "ip",
            "netns",
            "exec",
            c.ns("internet"),
            sys.executable,
            str(VIEWER),
            url,
            "--hold",
            str(hold),
        ],
        check=False,
        timeout=60,
    )
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines, res
    return json.loads(lines[-1])


def ws_url(endpoint: dict) -> str:
    ws = endpoint["websocket"]
    return f"ws://{ws['host']}:{ws['port']}{ws['path']}?token={ws['token']}"


async def endpoint(c, vm: dict) -> dict:
    return (await c.call("createConsoleEndpoint", virtualmachineid=vm["id"]))["consoleendpoint"]


def rgb(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


async def test_the_zone_gets_a_storage_vm_and_a_console_proxy(world):
    c, _, _ = world
    found = await running_pair(c)
    assert set(found) == {"consoleproxy", "secondarystoragevm"}
    proxy, ssvm = found["consoleproxy"], found["secondarystoragevm"]
    assert proxy["name"].startswith("v-") and ssvm["name"].startswith("s-")
    for s in (proxy, ssvm):
        assert s["publicip"].startswith("203.0.113.") and s["linklocalip"].startswith("169.254.")
        assert s["zonename"] == "zone1" and s["hostname"] and s["version"]
        assert {c["checkname"]: c["success"] for c in s["healthcheckresults"]}["document"]
    assert proxy["activeviewersessions"] == 0 and "activeviewersessions" not in ssvm
    assert proxy["publicip"] != ssvm["publicip"]
    # The storage VM's transfer listener answers on its public address: a forged extract
    # token is refused there.
    body = await c.curl(f"http://{ssvm['publicip']}/extract/forged", timeout=5)
    assert body is not None and "forged" not in body
    # Its agent runs the storage role on the zone's store, as its document says.
    [zone_id] = await ready_zone_ids(c)
    agent = await systemvms.agent_for(c.server.orchestrator, zone_id, "storage")
    status = (await agent.status()).body
    assert status["role"] == "storage" and status["converged"], status
    assert set(status["services"]) >= {"images", "transfer"}
    assert (
        await systemvms.public_address(c.server.orchestrator, zone_id, "storage")
        == ssvm["publicip"]
    )
    # A system VM's address is the system's: listed as such, never released by hand.
    [ip] = (await c.call("listPublicIpAddresses", ipaddress=proxy["publicip"], listall="true"))[
        "publicipaddress"
    ]
    assert ip["issystem"] is True
    with pytest.raises(CloudStackApiException) as refused:
        await c.call("disassociateIpAddress", id=ip["id"])
    assert "system VM" in refused.value.error["errortext"]


async def test_an_instance_console_through_the_proxy(world):
    c, vm1, vm2 = world
    await running_pair(c)
    first = await endpoint(c, vm1)
    assert first["success"] is True and first["url"].startswith("http://")
    assert first["websocket"]["path"] == "/websockify" and first["websocket"]["port"] == "8080"
    seen = await view(c, ws_url(first))
    assert seen["ok"], seen
    assert seen["colour"] == rgb(colour_of(vm1["instancename"]))
    assert (seen["width"], seen["height"]) == (320, 240)
    # The same token again is refused before any connection to the instance.
    again = await view(c, ws_url(first))
    assert again == {**again, "ok": False, "status": 403}
    # Each token opens its own instance's screen, and a token altered on its way fails.
    second = await endpoint(c, vm2)
    seen2 = await view(c, ws_url(second))
    assert seen2["ok"] and seen2["colour"] == rgb(colour_of(vm2["instancename"]))
    token = (await endpoint(c, vm1))["websocket"]["token"]
    forged = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    third = await endpoint(c, vm1)
    third["websocket"]["token"] = forged
    assert (await view(c, ws_url(third)))["status"] == 403


async def test_an_open_session_is_counted(world):
    c, vm1, _ = world
    await running_pair(c)
    url = ws_url(await endpoint(c, vm1))
    viewer = asyncio.create_task(view(c, url, hold=6))
    counted = await until(
        lambda: system_vms(c, systemvmtype="consoleproxy"),
        lambda f: f["consoleproxy"].get("activeviewersessions") == 1,
        timeout=15,
        interval=0.5,
    )
    assert counted["consoleproxy"]["activeviewersessions"] == 1
    assert (await viewer)["ok"]


async def test_a_key_rotation_keeps_tokens_issued_before_it(world):
    c, vm1, _ = world
    await running_pair(c)
    before = await endpoint(c, vm1)
    orch = c.server.orchestrator
    [zone_id] = await ready_zone_ids(c)
    keys = await console.rotate(orch, zone_id)  # a new key, pushed to the proxy
    assert len(keys) == 2
    after = await endpoint(c, vm1)
    for answer in (before, after):
        seen = await view(c, ws_url(answer))
        assert seen["ok"] and seen["colour"] == rgb(colour_of(vm1["instancename"])), seen


async def ready_zone_ids(c) -> list[int]:
    async with c.server.db.sessions() as session:
        return await systemvms.ready_zones(session)


async def test_a_stopped_instance_has_no_console(world):
    c, _, _ = world
    network = (await c.call("listNetworks", name="desk"))["network"][0]
    vm = await c.deploy(network, "desk3")
    await c.call("stopVirtualMachine", id=vm["id"])
    with pytest.raises(CloudStackApiException) as refused:
        await endpoint(c, vm)
    assert refused.value.error["errorcode"] == 431
    assert "Stopped" in refused.value.error["errortext"]


async def test_a_console_proxy_destroyed_behind_the_servers_back_is_recreated(world):
    c, vm1, _ = world
    before = (await running_pair(c))["consoleproxy"]
    await c.driver().runtime.stop(before["name"])  # kill everything, delete the namespace

    def replaced(found: dict[str, dict]) -> bool:
        proxy = found.get("consoleproxy")
        return bool(
            proxy
            and proxy["id"] != before["id"]
            and proxy["state"] == "Running"
            and proxy.get("agentstate") == "Up"
        )

    found = await until(lambda: system_vms(c), replaced, timeout=90, interval=0.5)
    assert replaced(found), found
    events = (await c.call("listEvents", type="PROXY.RECREATE", listall="true")).get("event", [])
    assert any(before["name"] in e["description"] for e in events), events
    seen = await view(c, ws_url(await endpoint(c, vm1)))
    assert seen["ok"] and seen["colour"] == rgb(colour_of(vm1["instancename"]))


async def test_system_vm_life_cycle_over_the_api(world):
    c, _, _ = world
    ssvm = (await running_pair(c))["secondarystoragevm"]
    stopped = (await c.call("stopSystemVm", id=ssvm["id"]))["systemvm"]
    assert stopped["state"] == "Stopped" and "hostid" not in stopped
    assert ssvm["name"] not in await c.driver().running()
    started = (await c.call("startSystemVm", id=ssvm["id"]))["systemvm"]
    assert started["state"] == "Running" and started["publicip"] == ssvm["publicip"]
    rebooted = (await c.call("rebootSystemVm", id=ssvm["id"]))["systemvm"]
    assert rebooted["state"] == "Running"
    gone = (await c.call("destroySystemVm", id=ssvm["id"]))["systemvm"]
    assert gone["state"] == "Destroyed"
    found = await running_pair(c)
    assert found["secondarystoragevm"]["id"] != ssvm["id"]
