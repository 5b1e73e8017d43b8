"""A live management server (SQLite) driven by the real cs client."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import requests
from cs.client import CloudStack, CloudStackApiException

from mgmt.server.app import ManagementServer, Settings


def admin_client(live, method="get") -> CloudStack:
    return CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                      method=method, poll_interval=0.1, fetch_result=True)


def call(client, command_name, /, **params):
    return asyncio.to_thread(getattr(client, command_name), **params)


async def _user_client(live, admin, name: str, domainid: str | None = None) -> CloudStack:
    extra = {"domainid": domainid} if domainid else {}
    account = (await call(admin, "createAccount", username=name, password=f"pw-{name}",
                          email=f"{name}@x.test", firstname=name, lastname="T", **extra))["account"]
    keys = (await call(admin, "registerUserKeys", id=account["user"][0]["id"]))["userkeys"]
    return CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"], poll_interval=0.1)


@pytest.mark.parametrize("method", ["get", "post"])
async def test_zone_lifecycle_with_cs(live, method):
    cs = admin_client(live, method)
    zone = (await call(cs, "createZone", name="z1", networktype="Advanced", dns1="203.0.113.53"))
    zid = zone["zone"]["id"]
    listed = await call(cs, "listZones", id=zid)
    assert listed["count"] == 1 and listed["zone"][0]["name"] == "z1"
    await call(cs, "updateZone", id=zid, allocationstate="Enabled")
    assert (await call(cs, "listZones", available=True))["zone"][0]["allocationstate"] == "Enabled"
    await call(cs, "deleteZone", id=zid)
    assert await call(cs, "listZones") == {}


async def test_login_session_and_logout(live):
    admin = admin_client(live)
    await _user_client(live, admin, "alice")
    http = requests.Session()
    r = await asyncio.to_thread(http.post, live.url, data={
        "command": "login", "username": "alice", "password": "pw-alice", "response": "json"})
    assert r.status_code == 200, r.text
    key = r.json()["loginresponse"]["sessionkey"]
    assert http.cookies.get("sessionkey") == key
    r = await asyncio.to_thread(http.get, live.url, params={
        "command": "listAccounts", "sessionkey": key, "response": "json"})
    assert [a["name"] for a in r.json()["listaccountsresponse"]["account"]] == ["alice"]
    await asyncio.to_thread(http.get, live.url, params={"command": "logout", "sessionkey": key,
                                                        "response": "json"})
    r = await asyncio.to_thread(http.get, live.url, params={
        "command": "listAccounts", "sessionkey": key, "response": "json"})
    assert r.status_code == 401
    bad = await asyncio.to_thread(requests.post, live.url, data={
        "command": "login", "username": "alice", "password": "wrong", "response": "json"})
    assert bad.status_code == 531


async def test_async_job_answers_jobid_then_result(live):
    cs = admin_client(live)
    dom = (await call(cs, "createDomain", name="d1"))["domain"]
    raw = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                     fetch_result=False)
    answer = await call(raw, "deleteDomain", id=dom["id"], fetch_result=False)
    assert set(answer) == {"jobid"}
    for _ in range(200):  # up to 10 s: a loaded machine must not fail this
        job = await call(raw, "queryAsyncJobResult", jobid=answer["jobid"])
        if job["jobstatus"] != 0:
            break
        await asyncio.sleep(0.05)
    assert job["jobstatus"] == 1 and job["jobresult"] == {"success": True}
    assert job["cmd"] == "deleteDomain" and job["jobinstancetype"] == "Domain"
    jobs = await call(cs, "listAsyncJobs")
    assert any(j["jobid"] == answer["jobid"] for j in jobs["asyncjobs"])


async def test_failed_job_carries_the_error(live):
    cs = admin_client(live)
    dom = (await call(cs, "createDomain", name="busy"))["domain"]
    await _user_client(live, cs, "carol", domainid=dom["id"])
    with pytest.raises(CloudStackApiException) as err:
        await call(cs, "deleteDomain", id=dom["id"])
    assert err.value.error["errorcode"] == 536
    assert "still has 1 account" in err.value.error["errortext"]


async def test_tenancy_another_accounts_objects_look_missing(live):
    admin = admin_client(live)
    alice = await _user_client(live, admin, "alice2")
    bob = await _user_client(live, admin, "bob2")
    alice_user = (await call(alice, "listUsers"))["user"][0]["id"]
    # Bob can neither read nor change Alice's keys: the same answer as a missing id.
    for name in ("getUserKeys", "registerUserKeys"):
        with pytest.raises(CloudStackApiException) as err:
            await call(bob, name, id=alice_user)
        with pytest.raises(CloudStackApiException) as missing:
            await call(bob, name, id="00000000-0000-0000-0000-000000000000")
        assert err.value.error["errorcode"] == missing.value.error["errorcode"] == 431
        assert err.value.error["errortext"].replace(alice_user, "X") == \
            missing.value.error["errortext"].replace("00000000-0000-0000-0000-000000000000", "X")
    # Users see only their own account; admin-only commands do not exist for them.
    assert [a["name"] for a in (await call(bob, "listAccounts"))["account"]] == ["bob2"]
    with pytest.raises(CloudStackApiException) as err:
        await call(bob, "createZone", name="nope", networktype="Advanced")
    assert err.value.error["errorcode"] == 432


async def test_domain_admin_stays_in_its_subtree(live):
    admin = admin_client(live)
    sub = (await call(admin, "createDomain", name="sub"))["domain"]
    other = (await call(admin, "createDomain", name="other"))["domain"]
    acct = (await call(admin, "createAccount", username="dadmin", password="pw", email="d@x.t",
                       firstname="D", lastname="A", accounttype=2, domainid=sub["id"]))["account"]
    keys = (await call(admin, "registerUserKeys", id=acct["user"][0]["id"]))["userkeys"]
    dadmin = CloudStack(live.url, key=keys["apikey"], secret=keys["secretkey"])
    child = (await call(dadmin, "createDomain", name="child"))["domain"]
    assert child["path"] == "ROOT/sub/child"
    paths = {d["path"] for d in (await call(dadmin, "listDomains"))["domain"]}
    assert paths == {"ROOT/sub", "ROOT/sub/child"}
    with pytest.raises(CloudStackApiException) as err:
        await call(dadmin, "createDomain", name="x", parentdomainid=other["id"])
    assert err.value.error["errorcode"] == 431


async def test_integration_port_is_off_by_default_and_loopback_only(tmp_path):
    server = ManagementServer(Settings(home=tmp_path / "h", port=0))
    await server.open()
    try:
        assert len(await server.listen()) == 1
    finally:
        await server.close()
    server = ManagementServer(Settings(home=tmp_path / "h", port=0, integration_port=18096))
    await server.open()
    try:
        urls = await server.listen()
        assert urls[1].startswith("http://127.0.0.1:18096/")
        r = await asyncio.to_thread(requests.get, urls[1],
                                    params={"command": "listZones", "response": "json"})
        assert r.status_code == 200  # no signature needed there
    finally:
        await server.close()


def test_keys_command_prints_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mgmt.cli", "mgmt", "keys", "--home",
                          str(tmp_path / "k")], capture_output=True, text=True, check=True)
    import json

    keys = json.loads(out.stdout)
    assert set(keys) == {"apikey", "secretkey"} and len(keys["apikey"]) > 40
    assert (tmp_path / "k" / "admin.json").stat().st_mode & 0o777 == 0o600


async def test_async_command_refuses_a_bad_id_before_creating_a_job(live):
    cs = admin_client(live)
    raw = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey)
    with pytest.raises(CloudStackApiException) as err:
        await call(raw, "deleteDomain", id="00000000-0000-0000-0000-000000000000")
    assert err.value.error["errorcode"] == 431
    assert "Unable to find domain" in err.value.error["errortext"]
    assert await call(cs, "listAsyncJobs") == {}  # no job was created
    dom = (await call(cs, "createDomain", name="gone"))["domain"]
    first = await call(raw, "deleteDomain", id=dom["id"])
    assert set(first) == {"jobid"}
    job = None
    for _ in range(200):
        job = await call(raw, "queryAsyncJobResult", jobid=first["jobid"])
        if job["jobstatus"] != 0:
            break
        await asyncio.sleep(0.05)
    assert job["jobinstanceid"] == dom["id"]
