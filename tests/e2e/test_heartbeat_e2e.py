"""Signed heartbeats end to end: a real agent in a router namespace heartbeats to a live
server over the control network; when its agent dies the router is first seen stale
(polled, then silent) and then recreated by the reconcile loop, and the new router
heartbeats too."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from e2e_traffic import until
from orchestration import cloud
from sqlalchemy import select

from appliances.lab.netns import run
from mgmt.db.models import Event
from mgmt.db.models.compute import Router, VmInstance

pytestmark = [pytest.mark.lab, pytest.mark.slow]
LAB = "hbeat"


async def _row(c, name: str) -> Router | None:
    async with c.server.db.sessions() as session:
        return await session.scalar(select(Router).join(VmInstance, VmInstance.id == Router.vm_id)
                                    .where(VmInstance.name == name))


async def _events(c, type_: str) -> list[Event]:
    async with c.server.db.sessions() as session:
        return list((await session.scalars(select(Event).where(Event.type == type_)
                                           .order_by(Event.id))).all())


async def _kill_agent(namespace: str) -> list[int]:
    """SIGKILL the agent process in the namespace (its daemons keep running)."""
    pids = (await run(["ip", "netns", "pids", namespace])).stdout.split()
    killed = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mgmt.cli\0agent\0" in cmdline:
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))
    return killed


async def test_heartbeats_then_a_dead_agent_is_seen_stale_and_its_router_recreated(tmp_path):
    async with cloud(LAB, tmp_path / "mgmt") as c:
        await c.call("updateConfiguration", name="router.heartbeat.interval", value="1")
        network = await c.network("hb")
        await c.deploy(network, "hb1")
        [before] = (await c.call("listRouters", networkid=network["id"]))["router"]
        name = before["name"]

        # The agent heartbeats over the control network; the row's last heartbeat
        # advances and carries the document the server pushed.
        first = await until(lambda: _row(c, name), lambda r: r.last_heartbeat, timeout=20)
        assert first.last_heartbeat is not None, "no heartbeat arrived"
        later = await until(lambda: _row(c, name),
                            lambda r: r.last_heartbeat > first.last_heartbeat, timeout=20)
        assert later.last_heartbeat > first.last_heartbeat
        assert later.heartbeat_seq > first.heartbeat_seq
        assert later.heartbeat_interval == 1.0 and later.heartbeat_converged
        assert (later.heartbeat_generation, later.heartbeat_hash) == (
            later.applied_generation, later.applied_hash)
        [listed] = (await c.call("listRouters", id=before["id"]))["router"]
        checks = {check["checkname"]: check for check in listed["healthcheckresults"]}
        assert {"agent", "document", "dnsmasq", "nftables"} <= set(checks)
        assert listed["healthchecksfailed"] is False, checks
        reconciler = c.server.orchestrator.reconciler
        heard = await until(lambda: _value(set(reconciler.heard)),
                            lambda got: later.id in got, timeout=20)
        assert later.id in heard  # taken at its heartbeat's word: not polled

        assert await _kill_agent(c.ns(name)), "no agent process found"
        stale = await until(lambda: _events(c, "ROUTER.HEARTBEAT.STALE"),
                            lambda got: any(name in e.description for e in got), timeout=30)
        assert any(name in e.description for e in stale), "never seen stale"
        recreated = await until(lambda: _events(c, "ROUTER.RECREATE"),
                                lambda got: any(name in e.description for e in got),
                                timeout=60)
        [event] = [e for e in recreated if name in e.description]
        assert min(e.id for e in stale if name in e.description) < event.id

        [after] = (await c.call("listRouters", networkid=network["id"]))["router"]
        assert after["id"] != before["id"] and after["state"] == "Running"
        fresh = await until(lambda: _row(c, after["name"]), lambda r: r.last_heartbeat,
                            timeout=20)
        assert fresh.last_heartbeat is not None, "the new router sends no heartbeats"


async def _value(value):
    return value
