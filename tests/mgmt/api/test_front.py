"""The API front with a real client (cs) over HTTP: signing, envelopes, errors, limits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
from aiohttp.test_utils import TestServer
from cs.client import CloudStack, CloudStackApiException

import mgmt.commands.apis  # noqa: F401  (declares listApis, listCapabilities)
from mgmt.api import signing
from mgmt.api.dispatch import Dispatcher, RateLimiter
from mgmt.server.http import build_app


@dataclass
class FakeCaller:
    user_id: int
    account_id: int
    account_type: int
    domain_id: int = 1
    domain_path: str = "ROOT"


USERS = {
    "ADMINKEY": (FakeCaller(1, 1, 1), "admin-secret"),
    "USERKEY": (FakeCaller(2, 2, 0), "user-secret"),
}


class FakeDirectory:
    async def by_api_key(self, api_key):
        return USERS.get(api_key)

    async def by_session(self, session_key):
        return None


@pytest.fixture
async def server():
    settings = SimpleNamespace(api_limit=1000, api_interval=1)
    clock = {"now": None}
    dispatcher = Dispatcher(
        FakeDirectory(), SimpleNamespace(settings=settings), RateLimiter(1000, 1.0),
        clock=lambda: clock["now"] or datetime.now(UTC),
    )
    srv = TestServer(build_app(dispatcher))
    await srv.start_server()
    srv.clock = clock
    srv.dispatcher = dispatcher
    yield srv
    await srv.close()


def client(server, key="ADMINKEY", method="get", **kw) -> CloudStack:
    return CloudStack(str(server.make_url("/client/api")), key=key, secret=USERS[key][1],
                      method=method, **kw)


@pytest.mark.parametrize("method", ["get", "post"])
async def test_signed_request_gets_the_api_list(server, method):
    answer = await asyncio.to_thread(client(server, method=method).listApis)
    names = {api["name"] for api in answer["api"]}
    assert {"listApis", "listCapabilities"} <= names
    assert answer["count"] == len(answer["api"])


async def test_wrong_secret_is_401_with_the_error_envelope(server):
    cs = CloudStack(str(server.make_url("/client/api")), key="ADMINKEY", secret="wrong")
    with pytest.raises(CloudStackApiException) as err:
        await asyncio.to_thread(cs.listApis)
    assert err.value.error["errorcode"] == 401
    assert err.value.response.status_code == 401
    assert set(err.value.error) >= {"errorcode", "cserrorcode", "errortext", "uuidList"}


def _raw(server, params: dict, secret: str | None = None, method="GET"):
    params = dict(params)
    if secret:
        params["signature"] = signing.sign(params, secret)
    url = str(server.make_url("/client/api"))
    if method == "GET":
        return requests.get(url, params=params, timeout=5)
    return requests.post(url, data=params, timeout=5)


async def test_missing_signature_is_401(server):
    r = await asyncio.to_thread(
        _raw, server, {"command": "listApis", "apiKey": "ADMINKEY", "response": "json"})
    assert r.status_code == 401
    assert r.json()["listapisresponse"]["errorcode"] == 401


async def test_expired_and_replayed_after_expiry(server):
    expires = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S%z")
    params = {"command": "listApis", "apiKey": "ADMINKEY", "response": "json",
              "signatureVersion": "3", "expires": expires}
    params["signature"] = signing.sign(params, "admin-secret")
    first = await asyncio.to_thread(_raw, server, params)
    assert first.status_code == 200
    server.clock["now"] = datetime.now(UTC) + timedelta(seconds=120)  # the same URL, later
    replay = await asyncio.to_thread(_raw, server, params)
    assert replay.status_code == 401
    assert "expired" in replay.json()["listapisresponse"]["errortext"]
    no_expires = {k: v for k, v in params.items() if k not in ("expires", "signature")}
    missing = await asyncio.to_thread(_raw, server, no_expires, "admin-secret")
    assert missing.status_code == 401


async def test_unknown_command_is_432_and_xml_by_default(server):
    r = await asyncio.to_thread(_raw, server, {"command": "noSuchThing", "apiKey": "ADMINKEY"},
                                "admin-secret")
    assert r.status_code == 432
    assert r.headers["Content-Type"].startswith("text/xml")
    assert "<nosuchthingresponse" in r.text and "<errorcode>432</errorcode>" in r.text


async def test_json_content_type_and_single_top_level_key(server):
    r = await asyncio.to_thread(_raw, server, {"command": "listApis", "apiKey": "ADMINKEY",
                                               "response": "json"}, "admin-secret")
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert list(r.json()) == ["listapisresponse"]


async def test_empty_list_is_an_empty_object(server):
    r = await asyncio.to_thread(_raw, server, {"command": "listApis", "apiKey": "ADMINKEY",
                                               "response": "json", "name": "nothing"},
                                "admin-secret")
    assert r.json() == {"listapisresponse": {}}


async def test_none_is_absent_and_unknown_parameters_are_ignored(server):
    r = await asyncio.to_thread(_raw, server, {"command": "listApis", "apikey": "ADMINKEY",
                                               "response": "json", "name": "None",
                                               "whatever": "x"}, "admin-secret")
    assert r.status_code == 200 and r.json()["listapisresponse"]["count"] >= 2


async def test_rate_limit_answers_429(server):
    server.dispatcher.limiter = RateLimiter(3, 60)
    cs = client(server)
    for _ in range(3):
        await asyncio.to_thread(cs.listCapabilities)
    with pytest.raises(CloudStackApiException) as err:
        await asyncio.to_thread(cs.listCapabilities)
    assert err.value.error["errorcode"] == 429


async def test_other_methods_are_405(server):
    r = await asyncio.to_thread(requests.put, str(server.make_url("/client/api")), timeout=5)
    assert r.status_code == 405


async def test_role_filters_list_apis(server):
    answer = await asyncio.to_thread(client(server, key="USERKEY").listApis)
    assert all(api["name"] != "createZone" for api in answer["api"])
    assert json.dumps(answer)  # plain JSON


async def test_skiff_api_shell_resolves_verbs_and_nouns(server, tmp_path, monkeypatch):
    import io

    from mgmt.client import shell

    monkeypatch.setattr(shell, "CACHE_DIR", tmp_path)
    out, err = io.StringIO(), io.StringIO()
    sh = await asyncio.to_thread(shell.Shell, client(server), False, out, err)
    answer = await asyncio.to_thread(sh.call, ["list", "apis", "name=listCapabilities"], "table")
    assert answer["api"][0]["name"] == "listCapabilities"
    assert out.getvalue().splitlines()[0].split()[0] == "name"
    with pytest.raises(SystemExit, match="no command 'list widgets'.*takes: .*apis"):
        sh.call(["list", "widgets"])
    with pytest.raises(SystemExit, match="has no parameter colour"):
        sh.call(["list", "apis", "colour=red"])
