"""listall, isrecursive, account+domainid and projectid, as CloudStack lists:
the same rules (mgmt.commands.scope) for networks, events and async jobs."""

from __future__ import annotations

import asyncio

import pytest
from cs.client import CloudStack, CloudStackApiException


@pytest.fixture
async def world(live):
    server, url = live, live.url
    admin = CloudStack(url, key=server.admin.apikey, secret=server.admin.secretkey,
                       fetch_result=True, poll_interval=0.05)

    async def call(client, command_name, /, **params):
        return await asyncio.to_thread(getattr(client, command_name), **params)

    async def account(name, domainid, accounttype=0):
        acct = (await call(admin, "createAccount", username=name, password="pw",
                           email=f"{name}@x.test", firstname=name, lastname="T",
                           accounttype=accounttype, domainid=domainid))["account"]
        keys = (await call(admin, "registerUserKeys", id=acct["user"][0]["id"]))["userkeys"]
        return CloudStack(url, key=keys["apikey"], secret=keys["secretkey"],
                          fetch_result=True, poll_interval=0.05)

    d1 = (await call(admin, "createDomain", name="d1"))["domain"]
    sub = (await call(admin, "createDomain", name="sub", parentdomainid=d1["id"]))["domain"]
    d2 = (await call(admin, "createDomain", name="d2"))["domain"]
    clients = {
        "admin": admin,
        "alice": await account("alice", d1["id"]),
        "carl": await account("carl", sub["id"]),
        "dave": await account("dave", d1["id"], accounttype=2),
        "erin": await account("erin", d2["id"]),
    }
    zone = (await call(admin, "createZone", name="z", networktype="Advanced",
                       allocationstate="Enabled"))["zone"]
    [offering] = (await call(admin, "listNetworkOfferings",
                             name="DefaultIsolatedNetworkOfferingWithSourceNatService"))[
        "networkoffering"]
    project = (await call(clients["alice"], "createProject", name="p",
                          displaytext="alice's"))["project"]
    networks = {}
    for owner, extra in (("alice", {}), ("carl", {}), ("erin", {}), ("admin", {}),
                         ("alice", {"projectid": project["id"]})):
        name = f"{owner}-net" if not extra else "project-net"
        networks[name] = (await call(clients[owner], "createNetwork", name=name,
                                     zoneid=zone["id"], networkofferingid=offering["id"],
                                     **extra))["network"]["id"]

    async def names(who, command_name="listNetworks", key="network", field="name", **params):
        answer = await call(clients[who], command_name, **params)
        return sorted(item[field] for item in answer.get(key, []))

    async def refused(who, **params):
        with pytest.raises(CloudStackApiException) as err:
            await call(clients[who], "listNetworks", **params)
        return err.value.error

    ids = {"d1": d1["id"], "sub": sub["id"], "d2": d2["id"], "project": project["id"]}
    return names, refused, ids, networks


async def test_a_user_sees_its_own_account_whatever_it_asks(world):
    names, refused, ids, _ = world
    assert await names("alice") == ["alice-net"]
    assert await names("alice", listall=True) == ["alice-net"]
    assert await names("alice", domainid=ids["d1"], isrecursive=True) == ["alice-net"]
    # Another domain, or another account of its domain: as if missing.
    other = await refused("alice", domainid=ids["d2"])
    missing = await refused("alice", domainid="00000000-0000-4000-8000-000000000000")
    assert other["errorcode"] == missing["errorcode"] == 431
    assert (await refused("alice", account="dave", domainid=ids["d1"]))["errorcode"] == 431


async def test_an_admin_sees_its_own_account_unless_it_asks_for_more(world):
    names, refused, ids, networks = world
    assert await names("admin") == ["admin-net"]
    assert await names("admin", listall=True) == ["admin-net", "alice-net", "carl-net",
                                                  "erin-net"]
    assert await names("dave") == []
    assert await names("dave", listall=True) == ["alice-net", "carl-net"]
    # An id is looked up in everything the caller may see, projects included.
    assert await names("dave", id=networks["carl-net"]) == ["carl-net"]
    assert await names("admin", id=networks["project-net"]) == ["project-net"]


async def test_domainid_isrecursive_and_account(world):
    names, refused, ids, _ = world
    assert await names("dave", domainid=ids["d1"]) == ["alice-net"]
    assert await names("dave", domainid=ids["d1"], isrecursive=True) == ["alice-net",
                                                                        "carl-net"]
    assert await names("admin", domainid=ids["sub"]) == ["carl-net"]
    assert await names("dave", account="carl", domainid=ids["sub"]) == ["carl-net"]
    assert await names("dave", account="alice") == ["alice-net"]  # the caller's domain
    # Outside the domain admin's subtree: as if missing.
    assert (await refused("dave", domainid=ids["d2"]))["errorcode"] == 431
    assert "Unable to find account" in (await refused("dave", account="erin",
                                                      domainid=ids["sub"]))["errortext"]


async def test_projectid_lists_the_projects_resources(world):
    names, refused, ids, _ = world
    for who in ("alice", "dave", "admin"):  # member, admin over its domain, root
        assert await names(who, projectid=ids["project"]) == ["project-net"], who
        assert await names(who, projectid="-1") == ["project-net"], who
    assert await names("carl", projectid="-1") == []
    assert (await refused("erin", projectid=ids["project"]))["errorcode"] == 431


async def test_events_and_jobs_follow_the_same_rules(world):
    names, _, ids, _ = world
    created = "NETWORK.CREATE"
    events = await names("dave", "listEvents", "event", "description", type=created,
                         listall=True)
    assert events == ["created network alice-net", "created network carl-net"]
    assert await names("alice", "listEvents", "event", "description", type=created) == [
        "created network alice-net"]
    assert await names("admin", "listEvents", "event", "description", type=created,
                       projectid=ids["project"]) == ["created network project-net"]
    assert await names("admin", "listAsyncJobs", "asyncjobs", "jobid", domainid=ids["d2"]) == []
