"""Orchestration end to end: API calls through the cs client become routers, instances
and rules in namespaces, and real traffic shows each change.

One zone is built for the module (the fabric takes a few seconds); each test adds
what it needs and says what it expects a client on the lab's Internet to see.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from cs.client import CloudStackApiException
from e2e_traffic import until
from orchestration import cloud

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "orch"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        network = await c.network("web")
        vm1 = await c.deploy(network, "web1")
        vm2 = await c.deploy(network, "web2")
        yield c, network, vm1, vm2


def _ip(vm: dict) -> str:
    return vm["nic"][0]["ipaddress"]


async def _public_ip(c, network) -> dict:
    return (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]


async def test_instances_run_and_get_their_addresses_from_the_router(world):
    c, network, vm1, vm2 = world
    assert vm1["state"] == vm2["state"] == "Running"
    for vm in (vm1, vm2):
        lease = await until(lambda vm=vm: c.lease(vm), lambda got: got.get("ip"), timeout=30)
        assert lease["ip"] == _ip(vm)
        assert lease["router"] == network["gateway"] if "gateway" in network else True
    [router] = (await c.call("listRouters", networkid=network["id"]))["router"]
    assert router["state"] == "Running"
    assert router["publicip"].startswith("203.0.113.")
    assert router["guestipaddress"] == "10.1.1.1"
    assert router["linklocalip"].startswith("169.254.")
    assert router["redundantstate"] == "UNKNOWN" and router["isredundantrouter"] is False
    [net] = (await c.call("listNetworks", id=network["id"]))["network"]
    assert net["state"] == "Implemented"


async def test_port_forward_then_delete(world):
    c, network, vm1, _ = world
    ip = await _public_ip(c, network)
    rule = (await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                         publicport=8080, privateport=80,
                         virtualmachineid=vm1["id"]))["portforwardingrule"]
    assert rule["state"] == "Active"
    body = await c.curl(f"http://{ip['ipaddress']}:8080/")
    assert body and body.split()[0] == "web1", body
    fw = (await c.call("listFirewallRules", ipaddressid=ip["id"]))["firewallrule"]
    assert [(r["startport"], r["state"]) for r in fw] == [(8080, "Active")]
    await c.call("deletePortForwardingRule", id=rule["id"])
    assert await c.curl(f"http://{ip['ipaddress']}:8080/", timeout=2) is None
    assert (await c.call("listPortForwardingRules", ipaddressid=ip["id"])) == {}


async def test_static_nat_and_firewall_changes(world):
    c, network, _, vm2 = world
    ip = await _public_ip(c, network)
    await c.call("enableStaticNat", ipaddressid=ip["id"], virtualmachineid=vm2["id"])
    url = f"http://{ip['ipaddress']}/"
    assert await c.curl(url, timeout=2) is None  # static NAT does not open the firewall
    rule = (await c.call("createFirewallRule", ipaddressid=ip["id"], protocol="tcp",
                         startport=80, endport=80))["firewallrule"]
    body = await c.curl(url)
    assert body and body.split()[0] == "web2", body
    # A forward on a static-NAT address is a conflict (537), refused before any change.
    with pytest.raises(CloudStackApiException) as refused:
        await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                     publicport=22, privateport=22, virtualmachineid=vm2["id"])
    assert refused.value.error["errorcode"] == 537
    await c.call("deleteFirewallRule", id=rule["id"])
    assert await c.curl(url, timeout=2) is None


async def test_overlapping_forward_is_a_conflict(world):
    c, network, vm1, vm2 = world
    ip = await _public_ip(c, network)
    await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                 publicport=9000, publicendport=9010, privateport=9000, privateendport=9010,
                 virtualmachineid=vm1["id"], openfirewall="false")
    with pytest.raises(CloudStackApiException) as refused:
        await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                     publicport=9005, privateport=80, virtualmachineid=vm2["id"])
    assert refused.value.error["errorcode"] == 537
    assert "overlap" in refused.value.error["errortext"]


async def test_concurrent_clients_each_rule_applied_once(world):
    c, network, vm1, _ = world
    ip = await _public_ip(c, network)
    ports = list(range(10001, 10021))
    rules = await asyncio.gather(*(
        c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
               publicport=port, privateport=80, virtualmachineid=vm1["id"])
        for port in ports))
    assert all(r["portforwardingrule"]["state"] == "Active" for r in rules)
    listed = (await c.call("listPortForwardingRules", ipaddressid=ip["id"]))[
        "portforwardingrule"]
    assert sorted(int(r["publicport"]) for r in listed) == ports
    for port in (ports[0], ports[-1]):
        body = await c.curl(f"http://{ip['ipaddress']}:{port}/")
        assert body and body.split()[0] == "web1"


async def test_restart_with_cleanup_gives_a_new_router_with_the_same_behaviour(world):
    c, network, vm1, _ = world
    ip = await _public_ip(c, network)
    await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                 publicport=8081, privateport=80, virtualmachineid=vm1["id"])
    url = f"http://{ip['ipaddress']}:8081/"
    assert (await c.curl(url) or "").startswith("web1")
    [before] = (await c.call("listRouters", networkid=network["id"]))["router"]
    await c.call("restartNetwork", id=network["id"], cleanup="true")
    [after] = (await c.call("listRouters", networkid=network["id"]))["router"]
    assert after["id"] != before["id"] and after["state"] == "Running"
    assert after["publicip"] == before["publicip"]
    body = await until(lambda: c.curl(url), lambda got: got, timeout=60)
    assert body.split()[0] == "web1"


async def test_a_router_destroyed_behind_the_servers_back_is_recreated(world):
    c, network, vm1, _ = world
    ip = await _public_ip(c, network)
    await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                 publicport=8082, privateport=80, virtualmachineid=vm1["id"])
    url = f"http://{ip['ipaddress']}:8082/"
    assert (await c.curl(url) or "").startswith("web1")
    [before] = (await c.call("listRouters", networkid=network["id"]))["router"]
    await c.driver().runtime.stop(before["name"])  # kill everything, delete the namespace
    assert await c.curl(url, timeout=1) is None
    body = await until(lambda: c.curl(url, timeout=1), lambda got: got, timeout=60)
    assert body.split()[0] == "web1"
    [after] = (await c.call("listRouters", networkid=network["id"]))["router"]
    assert after["id"] != before["id"] and after["state"] == "Running"

    async def recreated() -> list[dict]:  # recorded once the new router took its document
        return (await c.call("listEvents", type="ROUTER.RECREATE", listall="true")).get(
            "event", [])

    events = await until(recreated, lambda got: got, timeout=30)
    assert any(before["name"] in e["description"] for e in events)


async def test_instance_life_cycle(world):
    c, network, _, _ = world
    vm = await c.deploy(network, "cycle")
    ip = _ip(vm)

    async def state(vm_id: str) -> str:
        [found] = (await c.call("listVirtualMachines", id=vm_id))["virtualmachine"]
        return found["state"]

    stopped = (await c.call("stopVirtualMachine", id=vm["id"]))["virtualmachine"]
    assert stopped["state"] == "Stopped" and "hostid" not in stopped
    assert vm["instancename"] not in await c.driver().running()
    started = (await c.call("startVirtualMachine", id=vm["id"]))["virtualmachine"]
    assert started["state"] == "Running" and _ip(started) == ip
    await c.call("rebootVirtualMachine", id=vm["id"])
    assert await state(vm["id"]) == "Running"
    lease = await until(lambda: c.lease(vm), lambda got: got.get("ip"), timeout=30)
    assert lease["ip"] == ip
    await c.call("destroyVirtualMachine", id=vm["id"])
    assert await state(vm["id"]) == "Destroyed"
    recovered = (await c.call("recoverVirtualMachine", id=vm["id"]))["virtualmachine"]
    assert recovered["state"] == "Stopped" and _ip(recovered) == ip  # the address was kept
    await c.call("destroyVirtualMachine", id=vm["id"], expunge="true")
    assert (await c.call("listVirtualMachines", id=vm["id"])) == {}
    again = await c.deploy(network, "cycle2")
    assert _ip(again) == ip  # expunging gave the address back
    with pytest.raises(CloudStackApiException) as refused:
        await c.call("startVirtualMachine", id=again["id"])
    assert refused.value.error["errorcode"] == 431 and "Running" in refused.value.error[
        "errortext"]


async def test_router_health_checks(world):
    c, network, _, _ = world
    [router] = (await c.call("listRouters", networkid=network["id"]))["router"]
    checks = (await c.call("getRouterHealthCheckResults", routerid=router["id"]))[
        "routerhealthchecks"]["healthchecks"]
    names = {check["checkname"]: check for check in checks}
    assert names["agent"]["success"] and names["document"]["success"], checks
    assert "dnsmasq" in names and "nftables" in names
    [listed] = (await c.call("listRouters", id=router["id"]))["router"]
    assert listed["healthchecksfailed"] is False and listed["requiresupgrade"] is False
