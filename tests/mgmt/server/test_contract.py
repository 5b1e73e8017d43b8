"""The API contract as clients see it: listApis, the cs command line, every error class."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cs.client import CloudStack, CloudStackApiException

from mgmt.api.registry import REGISTRY


def admin(live, **kw) -> CloudStack:
    return CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey, **kw)


async def test_every_declared_command_is_in_list_apis_with_its_parameters(live):
    apis = (await asyncio.to_thread(admin(live).listApis))["api"]
    listed = {a["name"]: a for a in apis}
    assert set(listed) == {cmd.name for cmd in REGISTRY.values()}
    for cmd in REGISTRY.values():
        api = listed[cmd.name]
        assert api["isasync"] == cmd.is_async
        assert {p["name"] for p in api.get("params", [])} == {p.name for p in cmd.params}
        for p in api.get("params", []):
            declared = next(q for q in cmd.params if q.name == p["name"])
            assert p["type"] == declared.type and p["required"] == declared.required


def _cs_cli(live, *args: str) -> subprocess.CompletedProcess:
    cli = shutil.which("cs", path=str(Path(sys.executable).parent)) or "cs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTACK_")}
    env.update(CLOUDSTACK_ENDPOINT=live.url, CLOUDSTACK_KEY=live.admin.apikey,
               CLOUDSTACK_SECRET=live.admin.secretkey, HOME=str(live.settings.home))
    return subprocess.run([cli, *args], capture_output=True, text=True, env=env, timeout=60,
                          cwd=live.settings.home)


@pytest.mark.parametrize("post", [False, True])
async def test_the_cs_command_line_drives_a_flow(live, post):
    extra = ["--post"] if post else []
    made = await asyncio.to_thread(_cs_cli, live, *extra, "createZone", "name=clizone",
                                   "networktype=Advanced")
    assert made.returncode == 0, made.stderr
    zone = json.loads(made.stdout)["zone"]
    listed = await asyncio.to_thread(_cs_cli, live, *extra, "listZones", f"id={zone['id']}")
    assert json.loads(listed.stdout)["zone"][0]["name"] == "clizone"
    dom = json.loads((await asyncio.to_thread(
        _cs_cli, live, *extra, "createDomain", "name=clidom")).stdout)["domain"]
    # An async command: the cs tool waits for the job and prints its result.
    gone = await asyncio.to_thread(_cs_cli, live, *extra, "deleteDomain", f"id={dom['id']}")
    assert gone.returncode == 0 and json.loads(gone.stdout) == {"success": True}, gone.stderr
    bad = await asyncio.to_thread(_cs_cli, live, *extra, "listZones", "id=not-a-uuid")
    assert bad.returncode != 0 and "431" in bad.stderr + bad.stdout


def _error(live, params: dict, method="get", signed=True) -> tuple[int, dict]:
    client = admin(live, method=method, fetch_result=True, poll_interval=0.05)
    if signed:
        try:
            getattr(client, params.pop("command"))(**params)
        except CloudStackApiException as exc:
            return exc.response.status_code, exc.error
        raise AssertionError("no error")
    r = requests.get(live.url, params={**params, "response": "json"}, timeout=10)
    return r.status_code, next(iter(r.json().values()))


async def test_every_error_class_we_answer_has_the_envelope(live):
    cs = admin(live, fetch_result=True)
    dom = (await asyncio.to_thread(cs.createDomain, name="busy"))["domain"]
    await asyncio.to_thread(cs.createAccount, username="u1", password="pw", email="u@x.t",
                            firstname="U", lastname="One", domainid=dom["id"])
    cases = {
        401: lambda: _error(live, {"command": "listZones", "apiKey": "nobody"}, signed=False),
        431: lambda: _error(live, {"command": "createZone"}),
        432: lambda: _error(live, {"command": "noSuchCommand"}),
        531: lambda: _error(live, {"command": "login", "username": "admin",
                                   "password": "wrong"}, method="post"),
        536: lambda: _error(live, {"command": "deleteDomain", "id": dom["id"]}),
    }
    for code, trigger in cases.items():
        status, body = await asyncio.to_thread(trigger)
        if code == 536:  # async: cs raises the job's failure
            status = body.get("errorcode", status)
        assert status == code and body["errorcode"] == code, (code, status, body)
        assert body["errortext"]
        if code != 536:  # a failed job's result is {errorcode, errortext} only, as in CloudStack
            assert isinstance(body["cserrorcode"], int) and body["uuidList"] == []
    r = await asyncio.to_thread(requests.put, live.url, timeout=10)
    assert r.status_code == 405
