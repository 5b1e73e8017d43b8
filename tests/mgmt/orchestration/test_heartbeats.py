"""Heartbeats on a live server and its database (SQLite or PostgreSQL): a genuine one
is recorded and shows in listRouters; a replayed, foreign or forged one changes
nothing; the reconcile loop takes a fresh heartbeat for an answer and polls a router
whose heartbeats stopped."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import pytest
from alembic import command as alembic_command
from cs.client import CloudStack
from orchestration_rows import routers_in_a_zone
from sqlalchemy import inspect, select, update

from appliances.common import certs
from appliances.common import heartbeat as wire
from mgmt.db.engine import open_database
from mgmt.db.migrate import alembic_config, current_revision, head_revision, upgrade
from mgmt.db.models import Event
from mgmt.db.models.compute import Router
from mgmt.db.types import utcnow
from mgmt.orchestration import health, heartbeats, reconcile
from mgmt.orchestration.orchestrator import Orchestrator
from mgmt.orchestration.pki import CA_VALIDITY, ApplianceCA
from mgmt.server.heartbeat import HeartbeatSites


def _beat(name: str, **changes) -> wire.Heartbeat:
    fields = {
        "appliance_id": name, "role": "router", "applied_generation": 0,
        "document_hash": None, "converged": True, "last_error": None, "version": "9.9.9",
        "uptime_s": 3.0, "sequence": time.time_ns() // 1000, "sent_at": time.time(),
        "interval": 2.0, "redundant_state": None,
    }
    return wire.Heartbeat(**{**fields, **changes})


def _signed(ca: ApplianceCA, beat: wire.Heartbeat, name: str | None = None):
    issued = ca.issue_agent(name or beat.appliance_id, "169.254.9.20")
    body = beat.body()
    return body, wire.sign(body, certs.load_key(issued.key.encode()), issued.cert.encode())


async def _post(url: str, body: bytes, headers: dict) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def _row(db, router_id: int) -> Router:
    async with db.sessions() as session:
        return await session.get_one(Router, router_id)


@pytest.fixture
async def cloud(live):
    """The live server with two routers' rows; its own reconcile loop stopped (the rows
    have no host: it would try to recreate them)."""
    live.orchestrator.reconciler._task.cancel()
    rows = await routers_in_a_zone(live.db, live.settings_home, 2)
    url = live.url.removesuffix("/client/api") + wire.PATH
    yield live, rows.router_ids, url


async def test_a_heartbeat_is_recorded_and_shown_by_list_routers(cloud):
    live, ids, url = cloud
    beat = _beat("r-0-VM", redundant_state="BACKUP", services={
        "dnsmasq": {"state": "ok", "healthy": True},
        "haproxy": {"state": "failed", "healthy": False, "last_error": "crash loop"}})
    status, text = await _post(url, *_signed(live.orchestrator.ca, beat))
    assert (status, text) == (204, "")
    row = await _row(live.db, ids[0])
    assert row.last_heartbeat is not None and row.heartbeat_seq == beat.sequence
    assert (row.heartbeat_generation, row.heartbeat_converged, row.heartbeat_interval) == (
        0, True, 2.0)
    assert row.version == "9.9.9" and row.redundant_state == "BACKUP"
    other = await _row(live.db, ids[1])
    assert other.last_heartbeat is None

    cs = CloudStack(live.url, key=live.admin.apikey, secret=live.admin.secretkey,
                    fetch_result=True)
    listed = (await asyncio.to_thread(cs.listRouters, listall="true"))["router"]
    [router] = [r for r in listed if r["name"] == "r-0-VM"]
    assert router["version"] == "9.9.9" and router["requiresupgrade"] is True
    assert router["redundantstate"] == "BACKUP"
    checks = {c["checkname"]: c for c in router["healthcheckresults"]}
    assert checks["agent"]["success"] and checks["document"]["success"]
    assert checks["dnsmasq"]["success"] and not checks["haproxy"]["success"]
    assert router["healthchecksfailed"] is True


async def test_a_replayed_or_older_heartbeat_changes_nothing(cloud):
    live, ids, url = cloud
    beat = _beat("r-0-VM")
    body, headers = _signed(live.orchestrator.ca, beat)
    assert (await _post(url, body, headers))[0] == 204
    before = await _row(live.db, ids[0])
    status, text = await _post(url, body, headers)
    assert status == 403 and "replay" in text
    older = _beat("r-0-VM", sequence=beat.sequence - 1, converged=False)
    status, text = await _post(url, *_signed(live.orchestrator.ca, older))
    assert status == 403 and "replay" in text
    after = await _row(live.db, ids[0])
    assert (after.heartbeat_seq, after.last_heartbeat, after.heartbeat_converged) == (
        before.heartbeat_seq, before.last_heartbeat, True)


async def test_foreign_forged_and_malformed_heartbeats_change_nothing(cloud, tmp_path):
    live, ids, url = cloud
    ca = live.orchestrator.ca
    key, cert = certs.make_ca("Skiff appliance CA", CA_VALIDITY)
    other_ca = ApplianceCA(cert, key, certs.cert_pem(cert).decode(), tmp_path / "other")
    body, headers = _signed(ca, _beat("r-0-VM", applied_generation=0))
    cases = {
        "not a router of this cloud": _signed(ca, _beat("r-99-VM")),
        "not issued by the appliance CA": _signed(other_ca, _beat("r-0-VM")),
        "names r-1-VM, not r-0-VM": _signed(ca, _beat("r-0-VM"), name="r-1-VM"),
        "signature does not match": (body.replace(b'"applied_generation":0',
                                                  b'"applied_generation":7'), headers),
        "clock": _signed(ca, _beat("r-0-VM", sent_at=time.time() - 3600)),
    }
    for reason, (bad_body, bad_headers) in cases.items():
        status, text = await _post(url, bad_body, bad_headers)
        assert status == 403 and reason in text, (reason, status, text)
    status, text = await _post(url, b"{}", {"Content-Type": "application/json"})
    assert status == 400 and wire.CERT_HEADER in text
    for router_id in ids:
        assert (await _row(live.db, router_id)).last_heartbeat is None


async def test_heartbeat_only_listeners_serve_heartbeats_not_the_api(cloud):
    live, ids, _ = cloud
    sites = HeartbeatSites(live.orchestrator)
    try:
        port = await sites.bind("127.0.0.1", 0)
        assert await sites.bind("127.0.0.1", 0) == port  # one listener per address
        base = f"http://127.0.0.1:{port}"
        assert (await _post(base + wire.PATH,
                            *_signed(live.orchestrator.ca, _beat("r-1-VM"))))[0] == 204
        status, _ = await _post(base + "/client/api", b"command=listZones", {})
        assert status == 404
    finally:
        await sites.close()
    assert (await _row(live.db, ids[1])).last_heartbeat is not None


# -- the reconcile loop ---------------------------------------------------------------


@pytest.fixture
async def quiet(db, tmp_path):
    """An orchestrator without a server (no background loop) and three routers' rows."""
    rows = await routers_in_a_zone(db, tmp_path, 3)
    orch = Orchestrator(db, tmp_path, "test-server")
    await orch.start(reconcile=False)
    yield orch, rows.router_ids
    await orch.close()


def _polls(monkeypatch, answering: set[int], generation: int | dict[int, int] = 0,
           doc_hash: str | None = None) -> list[int]:
    """Fake agent polls; ``generation``: what every agent runs, or per router id."""
    polled: list[int] = []

    async def look(orch, router_id):
        polled.append(router_id)
        if router_id in answering:
            runs = generation.get(router_id, 0) if isinstance(generation, dict) else generation
            return health.Status(True, runs, orch.fingerprints.reported(doc_hash),
                                 converged=True)
        return health.Status(False, error="no answer")

    monkeypatch.setattr(reconcile.health, "look", look)
    return polled


async def test_a_fresh_heartbeat_stands_in_for_a_poll_and_a_stale_one_does_not(
        quiet, monkeypatch):
    orch, ids = quiet
    polled = _polls(monkeypatch, answering={ids[1], ids[2]})
    await heartbeats.accept(orch, *_signed(orch.ca, _beat("r-0-VM")))
    loop = reconcile.Reconciler(orch)
    other_server = reconcile.Reconciler(orch)  # another server's loop on the database
    first = await loop.pass_once()
    assert first.heard == [ids[0]] and sorted(polled) == [ids[1], ids[2]]
    assert first.silent == [] and loop.failures == {}
    assert (await other_server.pass_once()).heard == [ids[0]]

    # Its heartbeats stop: once stale (3 of its intervals), it is polled, and a failed
    # poll is a miss.
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id == ids[0]).values(
            last_heartbeat=utcnow() - timedelta(seconds=7)))
    polled.clear()
    second = await loop.pass_once()
    assert second.heard == [] and second.stale == [ids[0]]
    assert sorted(polled) == ids and loop.failures == {ids[0]: 1}
    assert (await other_server.pass_once()).stale == [ids[0]]  # it sees it too...
    async with orch.db.sessions() as session:
        events = (await session.scalars(select(Event.description).where(
            Event.type == "ROUTER.HEARTBEAT.STALE"))).all()
    assert len(events) == 1 and "r-0-VM" in events[0]  # ...but it is recorded once
    third = await loop.pass_once()
    assert third.stale == [] and third.silent == [ids[0]]  # reported stale once


async def test_drift_a_heartbeat_reports_is_pushed_again(quiet, monkeypatch):
    orch, ids = quiet
    # The re-look under the router's lock (a poll) confirms what the heartbeats say.
    _polls(monkeypatch, answering=set(ids), generation={ids[0]: 5, ids[1]: 4, ids[2]: 5},
           doc_hash="cd" * 32)
    pushed: list[int] = []

    async def converge(orch, router_id, include=None, *, force=False):
        pushed.append(router_id)
        return 1

    monkeypatch.setattr(reconcile.sync, "converge", converge)
    earlier = utcnow() - timedelta(seconds=1)
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id.in_(ids)).values(
            applied_generation=5, applied_hash=orch.fingerprints.reported("cd" * 32),
            last_seen=earlier))
    for name in ("r-0-VM", "r-1-VM"):  # r-0 runs what the database says, r-1 does not
        generation = 5 if name == "r-0-VM" else 4
        await heartbeats.accept(orch, *_signed(orch.ca, _beat(
            name, applied_generation=generation, document_hash="cd" * 32)))
    report = await reconcile.Reconciler(orch).pass_once()
    assert report.heard == ids[:2] and report.drifted == [ids[1]] and pushed == [ids[1]]

    # A heartbeat received before the last push was recorded is no evidence of drift.
    async with orch.db.sessions() as session, session.begin():
        await session.execute(update(Router).where(Router.id == ids[1]).values(
            last_seen=utcnow() + timedelta(seconds=1)))
    pushed.clear()
    report = await reconcile.Reconciler(orch).pass_once()
    assert report.drifted == [] and pushed == []


# -- the migration --------------------------------------------------------------------


def _downgrade_to_0006(connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    alembic_command.downgrade(config, "0006")


async def test_revision_0007_downgrades_and_upgrades_again(db_url):
    db = await open_database(db_url, migrate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0006)
        async with db.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("routers")})
        assert "applied_hash" in columns and "last_heartbeat" not in columns
        assert await current_revision(db.engine) == "0006"
        await upgrade(db.engine)
        assert await current_revision(db.engine) == head_revision()
    finally:
        await db.close()
