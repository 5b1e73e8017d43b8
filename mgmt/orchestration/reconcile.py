"""The reconcile loop: every router runs what the database says, or is replaced.

Every ``router.reconcile.interval`` seconds each running router is looked at.
A router whose agent sent a signed heartbeat lately (mgmt.orchestration.heartbeats:
within 3 of its intervals) is taken at its word: the heartbeat's generation,
document hash and convergence. Any other router's agent is asked for its status
over mutual TLS (the handshake proves it holds the certificate naming that
router); a router whose heartbeats stop is recorded once as stale (event
``ROUTER.HEARTBEAT.STALE``) and polled from then on. Then:

- an agent that answers with another generation or document hash than the
  last one it confirmed, or that is not converged, gets its whole document
  again (drift: a restarted agent, a hand edit, a failed apply);
- a heartbeat received before the last push or poll recorded on the row says
  nothing about drift (it may predate that push); the next one will;
- a router that misses ``router.check.failures`` checks in a row (stale or no
  heartbeat, and no answer to the poll) is dead: it
  is recreated on a healthy host (its old host avoided when there is another)
  and reprogrammed, with events, and no one has to do anything. A router its
  host says it does not run (``HostDriver.running``, one listing per host and
  pass) misses the check at once: a destroyed router's control address answers
  nothing, so a look at it waits out the whole status timeout (3 s), twice
  before the router counts as dead;
- circuit breaker: when more than ``router.recreate.max.fraction`` of the
  running routers are dead at once, none is recreated. So many at once means
  the network or this server is the problem; recreating them all would make
  it worse. An alert event says so, and the loop keeps looking.

Each pass also starts the system VMs' own pass in the background
(mgmt.orchestration.systemvms), which gives every ready zone its storage VM and
console proxy and repairs them the same way.

With several management servers each runs the loop; the per-router lock
makes sure one of them repairs a given router, and a router another server
has replaced meanwhile is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.core import Event
from mgmt.db.models.infra import Host
from mgmt.db.rowlocks import lock_rows
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration import health, heartbeats, routers, sync, systemvms
from mgmt.orchestration.locks import LockTimeout

STALE_EVENT = "ROUTER.HEARTBEAT.STALE"

log = logging.getLogger("skiff.reconcile")
PARALLEL_LOOKS = 16


@dataclass
class Report:
    """What one pass found and did (for tests and the log)."""

    checked: int = 0
    #: Routers a fresh heartbeat answered for (not polled).
    heard: list[int] = field(default_factory=list)
    #: Routers whose heartbeats went stale in this pass.
    stale: list[int] = field(default_factory=list)
    drifted: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    recreated: list[int] = field(default_factory=list)
    breaker_open: bool = False


class Reconciler:
    def __init__(self, orch):
        self.orch = orch
        self.failures: dict[int, int] = {}
        self.breaker_open = False
        self.heard: set[int] = set()  # routers a fresh heartbeat answered for last pass
        self._task: asyncio.Task | None = None
        self.passes = 0

    def start(self) -> None:
        self._task = self.orch.spawn(self._run(), "router-reconcile")

    async def _run(self) -> None:
        while True:
            try:
                async with self.orch.db.sessions() as session:
                    interval = float(await get_setting(session, "router.reconcile.interval"))
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything one pass meets
                log.exception("reconcile pass failed")
                interval = 5.0
            await asyncio.sleep(interval)

    async def _settings(self) -> tuple[int, float]:
        async with self.orch.db.sessions() as session:
            return (int(await get_setting(session, "router.check.failures")),
                    float(await get_setting(session, "router.recreate.max.fraction")))

    async def pass_once(self) -> Report:
        report = Report()
        await self._hosts()
        systemvms.kick(self.orch)  # the zones' system VMs, in a task of their own
        async with self.orch.db.sessions() as session:
            rows = list((await session.execute(
                select(Router.id, VmInstance.name, VmInstance.host_id)
                .join(VmInstance, VmInstance.id == Router.vm_id)
                .where(Router.live(), VmInstance.live(), VmInstance.state == "Running")
                .order_by(Router.id))).all())
        running = [row[0] for row in rows]
        self.failures = {k: v for k, v in self.failures.items() if k in running}
        absent = await self._absent(rows)
        beats = await heartbeats.fresh_statuses(self.orch, running)
        report.heard = sorted(set(beats) - absent)
        report.stale = sorted((self.heard & set(running)) - set(beats))
        self.heard = set(report.heard)
        for router_id in report.stale:
            await self._stale(router_id)
        limit = asyncio.Semaphore(PARALLEL_LOOKS)

        async def look(router_id: int) -> tuple[int, health.Status]:
            if router_id in absent:
                return router_id, health.Status(False, error="not running on its host")
            if router_id in beats:
                return router_id, beats[router_id]
            async with limit:
                return router_id, await health.look(self.orch, router_id)

        looks = await asyncio.gather(*(look(r) for r in running))
        report.checked = len(looks)
        for router_id, status in looks:
            if status.reachable:
                self.failures.pop(router_id, None)
                if await self._drifted(router_id, status):
                    report.drifted.append(router_id)
            else:
                self.failures[router_id] = self.failures.get(router_id, 0) + 1
        threshold, fraction = await self._settings()
        dead = [r for r, n in self.failures.items() if n >= threshold]
        report.silent = dead
        if not dead:
            self.breaker_open = False
            self.passes += 1
            return report
        if len(dead) > 1 and len(dead) > fraction * len(running):
            report.breaker_open = True
            if not self.breaker_open:
                await self.orch.record_event(
                    "ROUTER.RECREATE.HALTED",
                    f"{len(dead)} of {len(running)} routers stopped answering at once: none is "
                    "recreated automatically (check the hosts and the control network; "
                    "rebootRouter or restartNetwork with cleanup repairs one by hand)",
                    None, None, level="ERROR")
                log.error("circuit breaker open: %d of %d routers silent", len(dead),
                          len(running))
            self.breaker_open = True
            self.passes += 1
            return report
        self.breaker_open = False
        for router_id in dead:
            self.failures.pop(router_id, None)
            if await self._recreate(router_id):
                report.recreated.append(router_id)
        self.passes += 1
        return report

    async def _hosts(self) -> None:
        """Hosts this server drives: Up while their driver says healthy, else Alert."""
        async with self.orch.db.sessions() as session:
            hosts = (await session.scalars(select(Host).where(
                Host.live(), Host.id.in_(list(self.orch.driven_hosts()) or [-1])))).all()
            for host in hosts:
                try:
                    found = await self.orch.driver(host).health()
                except Exception as exc:  # noqa: BLE001 - an unreachable host is a status
                    found = health.HostHealth(False, f"{type(exc).__name__}: {exc}")
                state = "Up" if found.ok else "Alert"
                if state != host.state:
                    log.warning("host %s is %s: %s", host.name, state, found.detail)
                    await self.orch.record_event("HOST.STATE", f"host {host.name} is {state}"
                                                 f" {found.detail}".rstrip(), None, None)
                host.state = state
                if found.ok:
                    host.last_seen = utcnow()
            await session.commit()

    async def _absent(self, rows) -> set[int]:
        """Routers (id, name, host id) that their host's listing does not show. A host
        that cannot list, or lists nothing at all (maybe a failed listing), decides
        nothing: its routers are looked at as usual."""
        by_host: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for router_id, name, host_id in rows:
            if host_id is not None:
                by_host[host_id].append((router_id, name))
        out: set[int] = set()
        for host_id, on_host in by_host.items():
            async with self.orch.db.sessions() as session:
                host = await session.get(Host, host_id)
            if host is None:
                continue
            await self._keep_heartbeats(host)
            try:
                present = await asyncio.wait_for(self.orch.driver(host).running(),
                                                 health.STATUS_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the looks decide instead
                log.debug("listing host %s failed: %s", host.name, exc)
                continue
            if present:
                out |= {router_id for router_id, name in on_host if name not in present}
        return out

    async def _keep_heartbeats(self, host: Host) -> None:
        """The host's heartbeat listener or forward back (a restarted server, a lost SSH
        connection): its routers keep the URL they were started with."""
        try:
            await asyncio.wait_for(self.orch.heartbeat(host), health.STATUS_TIMEOUT)
        except TimeoutError:
            log.debug("host %s: heartbeat listener not ready in time", host.name)

    async def _drifted(self, router_id: int, status: health.Status) -> bool:
        if not await self._disagrees(router_id, status):
            return False
        try:
            # A push in flight, of this server or another, may have reached the agent
            # but not yet the router's row. Under the router's lock every push has
            # ended and recorded what it pushed: look again before pushing anew.
            async with self.orch.locks.hold(router_id):
                status = await health.look(self.orch, router_id)
                if not status.reachable or not await self._disagrees(router_id, status):
                    return False
                log.warning("router %s drifted (agent: generation %s, converged %s): "
                            "re-pushing", router_id, status.generation, status.converged)
                await sync.converge(self.orch, router_id, force=True)
        except (sync.RouterRefused, sync.RouterUnreachable, LockTimeout) as exc:
            log.warning("re-pushing router %s failed: %s", router_id, exc)
        return True

    async def _disagrees(self, router_id: int, status: health.Status) -> bool:
        """The agent runs something else than the last push the row records."""
        async with self.orch.db.sessions() as session:
            router = await session.get_one(Router, router_id)
            expected = (router.applied_generation, router.applied_hash)
        if router.applied_hash is None and router.last_error is None:
            return False  # its start has not pushed the first document yet: not drift
        if status.heard is not None and router.last_seen and status.heard <= router.last_seen:
            return False  # a heartbeat from before the last push or poll: no evidence
        return (status.generation, status.document_hash) != expected or not status.converged

    async def _stale(self, router_id: int) -> None:
        """Log it, and record the event once per silence: every server's loop sees the
        same stale heartbeat, so the event is added under the router's row lock only
        if no server has recorded this one yet."""
        async with self.orch.db.sessions() as session:
            await lock_rows(session, Router, Router.id == router_id)
            router = await session.get(Router, router_id)
            vm = await session.get(VmInstance, router.vm_id) if router else None
            if router is None or vm is None:
                return
            last = router.last_heartbeat
            log.warning("router %s: no heartbeat since %s; polling it", vm.name, last)
            description = (f"router {vm.name} sent no heartbeat since "
                           f"{last.isoformat() if last else 'ever'}; its agent is polled instead")
            recorded = await session.scalar(select(Event.id).where(
                Event.type == STALE_EVENT, Event.resource_uuid == vm.uuid,
                Event.description == description).limit(1))
            if recorded is None:
                session.add(Event(type=STALE_EVENT, level="WARN", description=description,
                                  state="Completed", account_id=vm.account_id,
                                  domain_id=vm.domain_id, resource_type="DomainRouter",
                                  resource_uuid=vm.uuid))
            await session.commit()

    async def _recreate(self, router_id: int) -> bool:
        """Recreate a dead router unless another server did (or is doing) it."""
        try:
            async with self.orch.locks.hold(router_id, timeout=1.0):
                async with self.orch.db.sessions() as session:
                    router = await session.get(Router, router_id)
                    if router is None or router.removed is not None:
                        return False  # another server replaced it already
                await routers.recreate(self.orch, router_id, "it stopped answering")
        except LockTimeout:
            return False  # another server is working on it
        except Exception as exc:  # noqa: BLE001 - reported, retried on the next pass
            log.exception("recreating router %s failed", router_id)
            await self.orch.record_event("ROUTER.RECREATE.FAILED",
                                         f"recreating router {router_id} failed: {exc}",
                                         None, None, level="ERROR")
            return False
        return True
