"""Settings, tags, events, alerts and projects on a live server, driven by the cs client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cs.client import CloudStack, CloudStackApiException
from sqlalchemy import select

from mgmt.db.models import Account, Domain
from mgmt.db.settings import get_setting
from mgmt.server.alerts import raise_alert

MISSING = "00000000-0000-4000-8000-000000000000"


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def refused(client, command_name, /, **params) -> dict:
    with pytest.raises(CloudStackApiException) as err:
        await call(client, command_name, **params)
    return err.value.error


def admin_client(live) -> CloudStack:
    return CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                      poll_interval=0.05, fetch_result=True)


async def user(live, admin, name, domainid=None, accounttype=0) -> tuple[dict, CloudStack]:
    extra = {"domainid": domainid} if domainid else {}
    account = (await call(admin, "createAccount", username=name, password="pw",
                          email=f"{name}@x.test", firstname=name, lastname="T",
                          accounttype=accounttype, **extra))["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return account, CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"],
                               poll_interval=0.05, fetch_result=True)


async def template(client, name="tpl", **extra) -> dict:
    ostype = (await call(client, "listOsTypes"))["ostype"][0]["id"]
    return (await call(client, "registerTemplate", name=name, displaytext=name,
                       url="http://203.0.113.5/t.qcow2", format="QCOW2", hypervisor="KVM",
                       ostypeid=ostype, zoneid="-1", **extra))["template"][0]


# ---------------------------------------------------------------- configuration

async def test_configuration_typed_update_and_scoped_values(live):
    admin = admin_client(live)
    [row] = (await call(admin, "listConfigurations", name="api.throttling.max"))["configuration"]
    assert row | {"value": "500", "defaultvalue": "500", "type": "Integer", "scope": "global",
                  "isdynamic": True, "category": "Advanced"} == row
    assert row["description"]
    # Badly typed values, values out of range and unknown names: 431 naming both.
    for name, value in [("api.throttling.max", "many"), ("api.throttling.enabled", "yes"),
                        ("api.throttling.max", "-3"), ("cpu.overprovisioning.factor", "x"),
                        ("no.such.setting", "17")]:
        error = await refused(admin, "updateConfiguration", name=name, value=value)
        assert error["errorcode"] == 431 and name in error["errortext"], error
        assert value in error["errortext"], error
    updated = (await call(admin, "updateConfiguration", name="job.expire.minutes",
                          value="60"))["configuration"]
    assert updated["value"] == "60" and updated["defaultvalue"] == "1440"
    by_keyword = (await call(admin, "listConfigurations", keyword="job.expire"))["configuration"]
    assert [(c["name"], c["value"]) for c in by_keyword] == [("job.expire.minutes", "60")]
    assert all(c["category"] == "Network" for c in (await call(
        admin, "listConfigurations", category="Network"))["configuration"])

    # Zone scope: a value for one zone, the global one elsewhere.
    zone = (await call(admin, "createZone", name="z1", networktype="Advanced"))["zone"]
    error = await refused(admin, "updateConfiguration", name="api.throttling.max", value="9",
                          zoneid=zone["id"])
    assert error["errorcode"] == 431 and "global scope" in error["errortext"]
    await call(admin, "updateConfiguration", name="use.system.public.ips", value="false",
               zoneid=zone["id"])
    at_zone = (await call(admin, "listConfigurations", zoneid=zone["id"]))["configuration"]
    assert {c["scope"] for c in at_zone} == {"zone"}
    assert {c["name"]: c["value"] for c in at_zone}["use.system.public.ips"] == "false"
    [glob] = (await call(admin, "listConfigurations", name="use.system.public.ips"))[
        "configuration"]
    assert glob["value"] == "true"
    # Account and domain scope; get_setting prefers the account's value over its domain's.
    dom = (await call(admin, "createDomain", name="d1"))["domain"]
    acct, alice = await user(live, admin, "alice", dom["id"])
    await call(admin, "updateConfiguration", name="remote.access.vpn.client.iprange",
               value="10.9.0.1-10.9.0.9", accountid=acct["id"])
    await call(admin, "updateConfiguration", name="allow.user.create.projects", value="false",
               domainid=dom["id"])
    [v] = (await call(admin, "listConfigurations", accountid=acct["id"],
                      name="remote.access.vpn.client.iprange"))["configuration"]
    assert v["value"] == "10.9.0.1-10.9.0.9" and v["scope"] == "account"
    async with live.db.sessions() as session:
        account_id = await session.scalar(select(Account.id).where(Account.uuid == acct["id"]))
        domain_id = await session.scalar(select(Domain.id).where(Domain.uuid == dom["id"]))
        scope = {"account": account_id, "domain": domain_id}
        assert await get_setting(session, "remote.access.vpn.client.iprange", scope) == \
            "10.9.0.1-10.9.0.9"
        assert await get_setting(session, "remote.access.vpn.client.iprange") == \
            "10.1.2.1-10.1.2.8"
        assert await get_setting(session, "allow.user.create.projects", scope) is False
        assert await get_setting(session, "allow.user.create.projects") is True
        assert await get_setting(session, "use.system.public.ips", {"zone": 999}) is True
    # The domain's value applies: alice (a user of d1) may not create projects.
    error = await refused(alice, "createProject", name="p", displaytext="p")
    assert error["errorcode"] == 531 and "allow.user.create.projects" in error["errortext"]
    # Users may not read or change settings.
    assert (await refused(alice, "listConfigurations"))["errorcode"] == 432
    assert (await refused(alice, "updateConfiguration", name="job.expire.minutes",
                          value="1"))["errorcode"] == 432
    events = (await call(admin, "listEvents", type="CONFIGURATION.VALUE.EDIT"))["event"]
    assert len(events) == 4


async def test_rate_limit_change_applies_without_restart(live):
    admin = admin_client(live)
    _, alice = await user(live, admin, "alice")
    for _ in range(8):  # the default limit (500 per second) lets these through
        await call(alice, "listZones")
    await call(admin, "updateConfiguration", name="api.throttling.interval", value="60")
    await call(admin, "updateConfiguration", name="api.throttling.max", value="5")
    assert live.settings.api_limit == 5 and live.settings.api_interval == 60
    [caps] = [(await call(admin, "listCapabilities"))["capability"]]
    assert caps["apilimitmax"] == 5
    statuses = []
    for _ in range(7):
        try:
            await call(alice, "listZones")
            statuses.append(200)
        except CloudStackApiException as exc:
            statuses.append(exc.error["errorcode"])
    # alice's window of 60 s may have begun before the change: at most 5 calls pass.
    assert statuses.count(200) <= 5 and statuses[-1] == 429
    assert statuses == sorted(statuses)  # 200s, then 429s
    live.set_throttling(0, 1)  # off again for the rest of the test
    async with live.db.sessions() as session:
        assert await get_setting(session, "api.throttling.max") == 5


async def test_throttling_enabled_false_lifts_the_limit(live):
    admin = admin_client(live)
    await call(admin, "updateConfiguration", name="api.throttling.max", value="3")
    await call(admin, "updateConfiguration", name="api.throttling.interval", value="60")
    await call(admin, "updateConfiguration", name="api.throttling.enabled", value="false")
    assert live.limiters[0].limit == 0
    for _ in range(6):
        await call(admin, "listZones")


# ---------------------------------------------------------------- tags

async def test_tags_create_list_delete_with_tenancy(live):
    admin = admin_client(live)
    zone = (await call(admin, "createZone", name="z1", networktype="Advanced",
                       allocationstate="Enabled"))["zone"]
    _, alice = await user(live, admin, "alice")
    _, bob = await user(live, admin, "bob")
    tpl = await template(alice)
    await call(alice, "createTags", resourceids=tpl["id"], resourcetype="Template",
               tags=[{"key": "env", "value": "prod"}, {"key": "team", "value": "blue"}])
    listed = (await call(alice, "listTags", resourceid=tpl["id"]))["tag"]
    assert [(t["key"], t["value"]) for t in listed] == [("env", "prod"), ("team", "blue")]
    assert listed[0] | {"resourcetype": "Template", "resourceid": tpl["id"], "account": "alice",
                        "domain": "ROOT"} == listed[0]
    [seen] = (await call(alice, "listTemplates", templatefilter="self"))["template"]
    assert {(t["key"], t["value"]) for t in seen["tags"]} == {("env", "prod"), ("team", "blue")}
    # Bob sees none of them and cannot tag alice's template: it looks missing.
    assert await call(bob, "listTags") == {}
    assert (await call(admin, "listTags", key="env"))["count"] == 1
    theirs = await refused(bob, "createTags", resourceids=tpl["id"], resourcetype="Template",
                           tags=[{"key": "k", "value": "v"}])
    missing = await refused(bob, "createTags", resourceids=MISSING, resourcetype="Template",
                            tags=[{"key": "k", "value": "v"}])
    assert theirs["errorcode"] == missing["errorcode"] == 431
    assert theirs["errortext"].replace(tpl["id"], "X") == missing["errortext"].replace(
        MISSING, "X")
    # A template is not an ISO; a kind that cannot be tagged is refused.
    assert (await refused(alice, "createTags", resourceids=tpl["id"], resourcetype="ISO",
                          tags=[{"key": "k", "value": "v"}]))["errorcode"] == 431
    assert "cannot be tagged" in (await refused(
        alice, "createTags", resourceids=tpl["id"], resourcetype="Bogus",
        tags=[{"key": "k", "value": "v"}]))["errortext"]
    # The same key with another value is refused; the same tag again changes nothing.
    assert "already" in (await refused(
        alice, "createTags", resourceids=tpl["id"], resourcetype="template",
        tags=[{"key": "env", "value": "dev"}]))["errortext"]
    await call(alice, "createTags", resourceids=tpl["id"], resourcetype="Template",
               tags=[{"key": "env", "value": "prod"}])
    # Zones: root admin tags them, everyone sees the tags.
    await call(admin, "createTags", resourceids=zone["id"], resourcetype="Zone",
               tags=[{"key": "region", "value": "eu"}])
    assert (await refused(bob, "createTags", resourceids=zone["id"], resourcetype="Zone",
                          tags=[{"key": "x", "value": "y"}]))["errorcode"] == 531
    [z] = (await call(bob, "listZones"))["zone"]
    assert z["tags"][0] | {"key": "region", "value": "eu", "resourcetype": "Zone"} == z["tags"][0]
    # The listing's tags are listTags' objects; the zone is createZone's answer.
    assert z["tags"] == (await call(bob, "listTags", resourcetype="Zone"))["tag"]
    assert z | {"tags": []} == zone and zone["tags"] == []
    assert [t["key"] for t in (await call(bob, "listTags"))["tag"]] == ["region"]
    assert [t["key"] for t in (await call(alice, "listTags", resourcetype="Template"))["tag"]] \
        == ["env", "team"]
    # Delete by key; then all; a deleted template's tags go with it.
    await call(alice, "deleteTags", resourceids=tpl["id"], resourcetype="Template",
               tags=[{"key": "env"}])
    assert [t["key"] for t in (await call(alice, "listTags", resourceid=tpl["id"]))["tag"]] == [
        "team"]
    await call(alice, "deleteTags", resourceids=tpl["id"], resourcetype="Template")
    assert await call(alice, "listTags", resourceid=tpl["id"]) == {}
    await call(alice, "createTags", resourceids=tpl["id"], resourcetype="Template",
               tags=[{"key": "env", "value": "prod"}])
    await call(alice, "deleteTemplate", id=tpl["id"])
    assert await call(alice, "listTags") == {"count": 1, "tag": [
        t for t in (await call(alice, "listTags"))["tag"] if t["resourcetype"] == "Zone"]}


# ---------------------------------------------------------------- events

async def test_events_follow_tenancy_and_can_be_removed(live):
    admin = admin_client(live)
    await call(admin, "createZone", name="z1", networktype="Advanced")
    d1 = (await call(admin, "createDomain", name="d1"))["domain"]
    _, alice = await user(live, admin, "alice", d1["id"])
    _, bob = await user(live, admin, "bob")
    _, d1admin = await user(live, admin, "d1admin", d1["id"], accounttype=2)
    await template(alice, "a-tpl")
    await template(bob, "b-tpl")

    def descriptions(answer):
        return sorted(e["description"] for e in answer.get("event", []))

    assert descriptions(await call(alice, "listEvents")) == ["registered template a-tpl"]
    assert descriptions(await call(bob, "listEvents", listall=True)) == [
        "registered template b-tpl"]
    assert descriptions(await call(d1admin, "listEvents")) == []
    assert descriptions(await call(d1admin, "listEvents", listall=True)) == [
        "registered template a-tpl"]
    assert descriptions(await call(d1admin, "listEvents", domainid=d1["id"],
                                   account="alice")) == ["registered template a-tpl"]
    assert (await refused(d1admin, "listEvents", domainid=live_root(await call(
        admin, "listDomains", name="ROOT"))))["errorcode"] == 431
    everything = (await call(admin, "listEvents", listall=True))["event"]
    assert {"registered template a-tpl", "registered template b-tpl", "created domain ROOT/d1"} \
        <= {e["description"] for e in everything}
    [ev] = (await call(alice, "listEvents", type="TEMPLATE.CREATE"))["event"]
    assert ev | {"level": "INFO", "state": "Completed", "account": "alice", "domain": "d1",
                 "domainid": d1["id"], "username": "alice", "resourcetype": "Template"} == ev
    assert ev["resourceid"] and ev["created"].endswith("+0000")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert await call(alice, "listEvents", startdate=tomorrow) == {}
    assert (await call(alice, "listEvents", enddate=tomorrow))["count"] == 1
    assert (await call(alice, "listEvents", keyword="a-tpl"))["count"] == 1
    # Bob cannot delete alice's event (it looks missing); alice archives hers by type.
    assert (await refused(bob, "deleteEvents", ids=ev["id"]))["errorcode"] == 431
    assert (await refused(alice, "deleteEvents"))["errorcode"] == 431
    await call(alice, "archiveEvents", type="TEMPLATE.CREATE")
    assert await call(alice, "listEvents") == {}
    [bev] = (await call(bob, "listEvents"))["event"]
    await call(bob, "deleteEvents", ids=bev["id"])
    assert await call(bob, "listEvents") == {}


def live_root(answer) -> str:
    return answer["domain"][0]["id"]


# ---------------------------------------------------------------- alerts

async def test_alerts(live):
    admin = admin_client(live)
    _, alice = await user(live, admin, "alice")
    await raise_alert(live, 9, "router r-1 is down", "no heartbeat for 60 s")
    await raise_alert(live, 7, "host h-1 disconnected")
    alerts = (await call(admin, "listAlerts"))["alert"]
    assert [(a["type"], a["name"]) for a in alerts] == [(7, "ALERT.COMPUTE.HOST"),
                                                        (9, "ALERT.SERVICE.DOMAINROUTER")]
    assert alerts[1]["description"] == "router r-1 is down: no heartbeat for 60 s"
    assert alerts[1]["sent"].endswith("+0000")
    assert (await call(admin, "listAlerts", type=9))["count"] == 1
    assert (await call(admin, "listAlerts", keyword="h-1"))["alert"][0]["type"] == 7
    assert (await call(admin, "listAlerts", name="ALERT.COMPUTE.HOST"))["count"] == 1
    assert (await refused(alice, "listAlerts"))["errorcode"] == 432
    await call(admin, "archiveAlerts", ids=alerts[0]["id"])
    assert [a["type"] for a in (await call(admin, "listAlerts"))["alert"]] == [9]
    await call(admin, "deleteAlerts", type="9")
    assert await call(admin, "listAlerts") == {}
    assert (await refused(admin, "deleteAlerts", ids=MISSING))["errorcode"] == 431


# ---------------------------------------------------------------- projects

async def test_project_membership_and_visibility(live):
    admin = admin_client(live)
    await call(admin, "createZone", name="z1", networktype="Advanced")
    d1 = (await call(admin, "createDomain", name="d1"))["domain"]
    _, alice = await user(live, admin, "alice", d1["id"])
    _, bob = await user(live, admin, "bob", d1["id"])
    _, carol = await user(live, admin, "carol")
    project = (await call(alice, "createProject", name="web", displaytext="web site"))["project"]
    assert project | {"name": "web", "displaytext": "web site", "account": "alice",
                      "owner": [{"account": "alice"}], "domain": "d1", "state": "Active"} \
        == project
    assert (await refused(alice, "createProject", name="web"))["errorcode"] == 431
    assert [p["id"] for p in (await call(alice, "listProjects"))["project"]] == [project["id"]]
    assert await call(bob, "listProjects") == {}
    assert await call(bob, "listProjects", id=project["id"]) == {}
    assert (await call(admin, "listProjects"))["count"] == 1
    # The project's own account is not listed as an account.
    assert "PrjAcct" not in str(await call(admin, "listAccounts", listall=True))

    # Bob joins; he sees the project and its templates (only with projectid).
    await call(alice, "addAccountToProject", projectid=project["id"], account="bob")
    assert [p["name"] for p in (await call(bob, "listProjects"))["project"]] == ["web"]
    members = (await call(bob, "listProjectAccounts", projectid=project["id"]))["projectaccount"]
    assert [(m["account"], m["role"]) for m in members] == [("alice", "Admin"), ("bob", "Regular")]
    tpl = await template(alice, "shared", projectid=project["id"])
    mine = await template(alice, "private")
    listed = (await call(bob, "listTemplates", templatefilter="self",
                         projectid=project["id"]))["template"]
    assert [t["id"] for t in listed] == [tpl["id"]]
    assert await call(bob, "listTemplates", templatefilter="self") == {}
    assert [t["id"] for t in (await call(alice, "listTemplates", templatefilter="self",
                                         projectid=project["id"]))["template"]] == [tpl["id"]]
    assert [t["id"] for t in (await call(alice, "listTemplates", templatefilter="self"))[
        "template"]] == [mine["id"]]
    await call(bob, "updateTemplate", id=tpl["id"], displaytext="by bob")  # members use it
    await call(bob, "createTags", resourceids=tpl["id"], resourcetype="Template",
               tags=[{"key": "owner", "value": "web"}])
    assert [t["key"] for t in (await call(alice, "listTags"))["tag"]] == ["owner"]

    # Carol (not a member) gets the missing-id answer everywhere.
    for name, params in [("listTemplates", {"templatefilter": "self"}),
                         ("listProjectAccounts", {}), ("addAccountToProject",
                                                       {"account": "carol"})]:
        theirs = await refused(carol, name, projectid=project["id"], **params)
        missing = await refused(carol, name, projectid=MISSING, **params)
        assert theirs["errorcode"] == missing["errorcode"] == 431
        assert theirs["errortext"].replace(project["id"], "X") == \
            missing["errortext"].replace(MISSING, "X")
    assert await call(carol, "listTags") == {}

    # A regular member may not manage the project; the owner cannot be removed.
    assert (await refused(bob, "updateProject", id=project["id"],
                          displaytext="x"))["errorcode"] == 531
    assert (await refused(alice, "deleteAccountFromProject", projectid=project["id"],
                          account="alice"))["errorcode"] == 431
    updated = (await call(alice, "updateProject", id=project["id"],
                          displaytext="new text"))["project"]
    assert updated["displaytext"] == "new text"
    await call(alice, "deleteAccountFromProject", projectid=project["id"], account="bob")
    assert await call(bob, "listProjects") == {}
    assert (await refused(bob, "listTemplates", templatefilter="self",
                          projectid=project["id"]))["errorcode"] == 431

    # A project that owns templates is not deleted; without them it is.
    assert (await refused(alice, "deleteProject", id=project["id"]))["errorcode"] == 536
    await call(alice, "deleteTemplate", id=tpl["id"])
    await call(alice, "deleteProject", id=project["id"])
    assert await call(alice, "listProjects") == {}
    kinds = {e["type"] for e in (await call(alice, "listEvents"))["event"]}
    assert {"PROJECT.CREATE", "PROJECT.ACCOUNT.ADD", "PROJECT.ACCOUNT.REMOVE",
            "PROJECT.UPDATE", "PROJECT.DELETE"} <= kinds


async def test_async_creates_answer_the_new_id_with_the_job(live):
    """CloudStack's BaseAsyncCreateCmd: jobid and the new object's id at once."""
    admin = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey)
    zone = (await call(admin, "createZone", name="zid", networktype="Advanced"))["zone"]
    first = await call(admin, "createProject", name="early", displaytext="early")
    assert set(first) == {"jobid", "id"}
    while (job := await call(admin, "queryAsyncJobResult", jobid=first["jobid"]))[
            "jobstatus"] == 0:
        await asyncio.sleep(0.02)
    assert job["jobresult"]["project"]["id"] == first["id"] == job["jobinstanceid"]
    first = await call(admin, "createPhysicalNetwork", name="pn", zoneid=zone["id"])
    while (job := await call(admin, "queryAsyncJobResult", jobid=first["jobid"]))[
            "jobstatus"] == 0:
        await asyncio.sleep(0.02)
    assert job["jobresult"]["physicalnetwork"]["id"] == first["id"]
