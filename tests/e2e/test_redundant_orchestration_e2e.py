"""A redundant offering's network through the API: a router pair with one primary,
traffic through the shared addresses, failover when the primary stops, automatic
recreation of a lost router, and a rolling restartNetwork with cleanup."""

from __future__ import annotations

import pytest
import pytest_asyncio
from e2e_traffic import until
from orchestration import cloud

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "pair"
REDUNDANT = "DefaultIsolatedNetworkOfferingWithSourceNatServiceRedundant"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        network = await c.network("ha", offering=REDUNDANT)
        vm = await c.deploy(network, "web1")
        ip = (await c.call("associateIpAddress", networkid=network["id"]))["ipaddress"]
        await c.call("createPortForwardingRule", ipaddressid=ip["id"], protocol="tcp",
                     publicport=8080, privateport=80, virtualmachineid=vm["id"])
        yield c, network, vm, f"http://{ip['ipaddress']}:8080/"


async def _routers(c, network) -> list[dict]:
    return (await c.call("listRouters", networkid=network["id"]))["router"]


async def _states(c, network) -> list[str]:
    return sorted(r.get("redundantstate", "") for r in await _routers(c, network)
                  if r["state"] == "Running")


async def _one_primary(c, network) -> list[dict]:
    """The pair once one router is PRIMARY and the other BACKUP (as the health looks
    of the reconcile loop report them)."""
    await until(lambda: _states(c, network), lambda got: got == ["BACKUP", "PRIMARY"],
                timeout=60)
    return await _routers(c, network)


def _primary(routers: list[dict]) -> dict:
    [primary] = [r for r in routers if r["redundantstate"] == "PRIMARY"]
    return primary


async def test_a_redundant_network_runs_a_pair_with_one_primary(world):
    c, network, vm, url = world
    [net] = (await c.call("listNetworks", id=network["id"]))["network"]
    assert net["redundantrouter"] is True
    routers = await _one_primary(c, network)
    assert len(routers) == 2 and all(r["isredundantrouter"] for r in routers)
    assert len({r["guestipaddress"] for r in routers}) == 2  # each its own address
    assert all(r["guestipaddress"] != "10.1.1.1" for r in routers)  # the gateway is shared
    assert {r["publicip"] for r in routers} == {routers[0]["publicip"]}
    lease = await until(lambda: c.lease(vm), lambda got: got.get("ip"), timeout=30)
    assert lease["ip"] == vm["nic"][0]["ipaddress"]
    body = await until(lambda: c.curl(url), lambda got: got, timeout=30)
    assert body.split()[0] == "web1"


async def test_traffic_survives_stopping_the_primary(world):
    c, network, _vm, url = world
    primary = _primary(await _one_primary(c, network))
    await c.call("stopRouter", id=primary["id"])
    body = await until(lambda: c.curl(url, timeout=1), lambda got: got, timeout=30)
    assert body.split()[0] == "web1"
    await until(lambda: _states(c, network), lambda got: got == ["PRIMARY"], timeout=30)
    await c.call("startRouter", id=primary["id"])
    routers = await _one_primary(c, network)
    assert _primary(routers)["id"] != primary["id"]  # nopreempt: the survivor stays primary
    assert (await c.curl(url) or "").startswith("web1")


async def test_a_lost_router_of_the_pair_is_recreated(world):
    c, network, _vm, url = world
    routers = await _one_primary(c, network)
    [backup] = [r for r in routers if r["redundantstate"] == "BACKUP"]
    await c.driver().runtime.stop(backup["name"])
    routers = await until(
        lambda: _one_primary(c, network),
        lambda got: backup["id"] not in {r["id"] for r in got}, timeout=90)
    assert len(routers) == 2
    assert (await c.curl(url) or "").startswith("web1")


async def test_restart_with_cleanup_replaces_both_one_at_a_time(world):
    c, network, _vm, url = world
    before = {r["id"] for r in await _one_primary(c, network)}
    await c.call("restartNetwork", id=network["id"], cleanup="true")
    after = await _one_primary(c, network)
    assert len(after) == 2 and not before & {r["id"] for r in after}
    body = await until(lambda: c.curl(url), lambda got: got, timeout=30)
    assert body.split()[0] == "web1"
