"""The redundant router pair: keepalived VRRP, conntrackd and the primary-only services.

Present only while the document has a ``redundancy`` section. keepalived (VRRP
only, unicast to the peer, no scripts) holds the shared addresses on the primary;
it reports every transition through its notify FIFO, which the agent reads: on
PRIMARY it commits conntrackd's external cache and resumes every service marked
``primary_only``, on BACKUP or FAULT it pauses them. The agent tells keepalived
to give up primary by writing 1 into a tracked file when a critical daemon of a
running service is down.

Config changes are checked with ``keepalived --config-test`` (the same flags as
the real start) and applied with SIGHUP, at most one per 1.5 advert intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import signal
import time
from dataclasses import dataclass
from ipaddress import IPv4Interface

from appliances.agent.service import Change, Service
from appliances.agent.supervisor import Supervisor
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write, read_text
from appliances.common.proc import run
from appliances.router.document import RouterDocument
from appliances.router.ha_render import HaPaths, render_conntrackd, render_keepalived
from appliances.router.services.conntrackd import ConntrackSync
from appliances.router.vips import vip_plan
from appliances.router.vrrp_events import FifoReader, ReloadThrottle, parse_notify

log = logging.getLogger(__name__)

KEEPALIVED = "keepalived"
IP = "ip"
INSTANCE = "skiff"
#: Neutron's throttle: at most one SIGHUP per 1.5 advert intervals.
RELOAD_FACTOR = 1.5
HEALTH_INTERVAL_S = 1.0
#: Polls in a row a daemon must be down before the router gives up primary
#: (the supervisor restarts a crashed daemon within a fraction of a second).
UNHEALTHY_POLLS = 2
#: How long a router stays in FAULT after giving up primary, so the peer takes over.
FAULT_HOLD_S = 10.0
START_TIMEOUT_S = 10.0


@dataclass
class _Plan:
    doc: RouterDocument
    keepalived: str | None  # None: redundancy is being removed
    conntrackd: str | None
    keepalived_changed: bool
    conntrackd_changed: bool


def _held(ip_json: str) -> set[tuple[str, str]]:
    """(interface, "ip/prefix") of every IPv4 address in ``ip -json addr show`` output."""
    return {
        (entry["ifname"], f"{a['local']}/{a['prefixlen']}")
        for entry in json.loads(ip_json or "[]")
        for a in entry.get("addr_info", [])
        if a.get("family") == "inet"
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


class KeepalivedService(Service):
    name = "redundancy"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.paths = HaPaths(ctx.state_dir / "redundancy")
        self.keepalived = Supervisor(
            "keepalived", on_event=self.state.event, pidfile=self.paths.dir / "keepalived.agent.pid"
        )
        self.conntrack = ConntrackSync(self.paths.conntrackd_conf, self.state.event)
        self.fifo = FifoReader(self.paths.fifo, self._on_notify)
        self.throttle: ReloadThrottle | None = None
        self.peers: list[Service] = []
        self.doc: RouterDocument | None = None
        #: None while not redundant; INIT until keepalived reports a state.
        self.vrrp_state: str | None = None
        self.since: float | None = None
        self.transitions = 0
        self.fault_reason: str | None = None
        self.vips_held: list[str] = []
        self._fault_until = 0.0
        self._unhealthy_polls = 0
        self._monitor: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def attach(self, services: list[Service]) -> None:
        """The services whose primary_only members follow this router's VRRP state."""
        self.peers = services

    # -- keepalived's command line ------------------------------------------------------

    def _flags(self, conf) -> list[str]:
        p = self.paths
        return [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--vrrp",
            f"--use-file={conf}",
            f"--pid={p.keepalived_pid}",
            f"--vrrp_pid={p.vrrp_pid}",
        ]

    def _argv(self) -> list[str]:
        return [KEEPALIVED, *self._flags(self.paths.keepalived_conf)]

    # -- the contract ------------------------------------------------------------------

    async def prepare(self, doc: RouterDocument) -> Change:
        running = self.keepalived.running or self.conntrack.daemon.running
        if doc.redundancy is None:
            if running or self.vrrp_state is not None:
                return Change(
                    self.name, True, "remove redundancy", _Plan(doc, None, None, True, True)
                )
            return Change(self.name, False, "unchanged")
        ka = render_keepalived(doc, self.paths)
        ct = render_conntrackd(doc, self.paths)
        ka_changed = read_text(self.paths.keepalived_conf) != ka
        ct_changed = read_text(self.paths.conntrackd_conf) != ct
        plan = _Plan(doc, ka, ct, ka_changed, ct_changed)
        if (
            not (ka_changed or ct_changed)
            and self.keepalived.running
            and self.conntrack.daemon.running
        ):
            self.doc = doc
            return Change(self.name, False, "unchanged", plan)
        parts = []
        if not self.keepalived.running:
            parts.append("start keepalived")
        elif ka_changed:
            parts.append("reload keepalived")
        if ct_changed or not self.conntrack.daemon.running:
            parts.append("restart conntrackd")
        return Change(self.name, True, ", ".join(parts), plan)

    async def check(self, change: Change) -> None:
        plan: _Plan = change.data
        if plan.keepalived is None:
            return
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        if plan.keepalived_changed or not self.keepalived.running:
            candidate = self.paths.dir / "keepalived.conf.new"
            atomic_write(candidate, plan.keepalived, mode=0o600)
            result = await run([KEEPALIVED, "--config-test", *self._flags(candidate)], timeout=20)
            if not result.ok:
                raise ApplyError(
                    self.name, "keepalived --config-test refused the configuration", result.output
                )
        if plan.conntrackd_changed or not self.conntrack.daemon.running:
            candidate = self.paths.dir / "conntrackd.conf.new"
            atomic_write(candidate, plan.conntrackd, mode=0o600)
            await self.conntrack.check(candidate)

    async def commit(self, change: Change) -> None:
        plan: _Plan = change.data
        async with self._lock:
            if plan.keepalived is None:
                await self._leave(plan.doc)
                return
            await self._enter_or_update(plan)

    async def _enter_or_update(self, plan: _Plan) -> None:
        red = plan.doc.redundancy
        assert red is not None and plan.keepalived is not None and plan.conntrackd is not None
        if self.vrrp_state is None:
            # Becoming one of a pair: nothing primary-only serves until keepalived
            # says this router is the primary.
            self.vrrp_state, self.since = "INIT", time.time()
            self.state.event("joining a redundant pair; primary-only services paused")
            await self._pause_all()
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        if read_text(self.paths.health) is None:
            atomic_write(self.paths.health, "0\n")
        self.fifo.start()
        atomic_write(self.paths.conntrackd_conf, plan.conntrackd, mode=0o600)
        atomic_write(self.paths.keepalived_conf, plan.keepalived, mode=0o600)
        self.doc = plan.doc
        if plan.conntrackd_changed or not self.conntrack.daemon.running:
            await self.conntrack.start()
        interval = RELOAD_FACTOR * red.advert_interval_s
        if self.throttle is None:
            self.throttle = ReloadThrottle(interval, lambda: self.keepalived.signal(signal.SIGHUP))
        self.throttle.min_interval = interval
        if not self.keepalived.running:
            await self._start_keepalived()
        elif plan.keepalived_changed:
            sent = self.throttle.request()
            self.state.event("keepalived reloaded" if sent else "keepalived reload coalesced")
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch_health(), name="redundancy-health")

    async def _release_shared(self, doc: RouterDocument) -> None:
        """Before keepalived first runs, nobody may hold the shared addresses here: a
        router that served alone (or a keepalived a crashed agent left) had them."""
        result = await run([IP, "-json", "addr", "show"], timeout=10)
        if not result.ok:
            raise ApplyError(self.name, "ip addr show failed", result.output)
        have = _held(result.stdout)
        stale = [v for v in vip_plan(doc).all() if (v.dev, str(IPv4Interface(v.address))) in have]
        if not stale:
            return
        script = "".join(f"address del {v.address} dev {v.dev}\n" for v in stale)
        result = await run([IP, "-batch", "-"], input=script, timeout=10)
        if not result.ok:
            raise ApplyError(self.name, "could not hand the shared addresses over", result.output)
        self.state.event(f"released {len(stale)} shared address(es) before keepalived starts")

    async def _start_keepalived(self) -> None:
        if self.doc is not None:
            await self._release_shared(self.doc)
        mark = self.keepalived.log_mark
        await self.keepalived.restart(self._argv())
        try:
            await self.keepalived.wait_for_line(
                lambda line: (
                    "Entering BACKUP STATE" in line
                    or "Entering FAULT STATE" in line
                    or "Entering MASTER STATE" in line
                ),
                mark,
                START_TIMEOUT_S,
            )
        except TimeoutError:
            if not self.keepalived.running:
                raise ApplyError(
                    self.name, "keepalived did not start", "\n".join(self.keepalived.tail(15))
                ) from None
            log.warning("keepalived reported no state within %ss", START_TIMEOUT_S)

    async def _leave(self, doc: RouterDocument) -> None:
        """Stop being one of a pair: keepalived and conntrackd go, services serve again."""
        await self._stop_daemons()
        self.vrrp_state, self.since, self.doc = None, time.time(), None
        self.vips_held = []
        self.state.event("left the redundant pair")
        await self._resume_all()
        network = next((s for s in self.peers if s.name == "network"), None)
        reconcile = getattr(network, "reconcile", None)
        if reconcile is not None:
            # keepalived took the shared addresses with it; they are plain addresses now.
            await reconcile(doc)

    async def _stop_daemons(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self.throttle is not None:
            await self.throttle.cancel()
        await self.keepalived.stop()  # SIGTERM: keepalived releases the VIPs, adverts priority 0
        await self.conntrack.stop()
        await self.fifo.stop()

    async def withdraw(self) -> None:
        async with self._lock:
            await self._stop_daemons()
            if self.vrrp_state is not None:
                self.vrrp_state = None
                await self._resume_all()

    async def stop(self) -> None:
        await self._stop_daemons()

    # -- transitions -------------------------------------------------------------------

    async def _on_notify(self, line: str) -> None:
        parsed = parse_notify(line)
        if parsed is None or parsed[0] != INSTANCE:
            return
        async with self._lock:
            if self.vrrp_state is None:
                return  # a late line from a keepalived being stopped
            await self.transition(parsed[1])

    async def transition(self, state: str) -> None:
        """Act on a VRRP state keepalived reported (PRIMARY, BACKUP, FAULT, STOPPED)."""
        if state == self.vrrp_state or state == "STOPPED":
            return
        old = self.vrrp_state
        self.vrrp_state, self.since = state, time.time()
        self.transitions += 1
        self.state.event(f"{old} -> {state}")
        log.info("redundancy: %s -> %s", old, state)
        if state == "PRIMARY":
            await self.conntrack.transition(state)
            await self._resume_all()
        else:
            await self._pause_all()
            await self.conntrack.transition(state)
            if self.doc is not None:
                # keepalived removes them itself, unless a killed one left them behind
                # and its restarted successor starts as BACKUP.
                try:
                    await self._release_shared(self.doc)
                except ApplyError as exc:
                    self.state.event(f"releasing shared addresses failed: {exc}")
        await self._refresh_vips()

    def _primary_only(self) -> list[Service]:
        return [s for s in self.peers if s.primary_only and s is not self]

    async def _pause_all(self) -> None:
        for service in self._primary_only():
            try:
                await service.pause()
            except Exception as exc:  # the others must still stop serving
                log.exception("pausing %s failed", service.name)
                self.state.event(f"pausing {service.name} failed: {exc}")

    async def _resume_all(self) -> None:
        for service in self._primary_only():
            try:
                await service.resume()
            except Exception as exc:
                log.exception("resuming %s failed", service.name)
                self.state.event(f"resuming {service.name} failed: {exc}")
                if self.vrrp_state == "PRIMARY":
                    self._give_up(f"{service.name} could not resume: {exc}")

    # -- giving up primary -------------------------------------------------------------

    def unhealthy_services(self) -> list[str]:
        """Primary-only services that should serve but whose daemon is down."""
        return [s.name for s in self._primary_only() if not s.healthy()]

    def _give_up(self, reason: str) -> None:
        self.fault_reason = reason
        self._fault_until = time.monotonic() + FAULT_HOLD_S
        atomic_write(self.paths.health, "1\n")
        self.state.event(f"giving up primary: {reason}")
        log.warning("redundancy: giving up primary: %s", reason)

    def _healthy_again(self) -> None:
        self.state.event(f"healthy again (was: {self.fault_reason})")
        self.fault_reason = None
        atomic_write(self.paths.health, "0\n")

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                self.check_health()
                await self._refresh_vips()
            except Exception:
                log.exception("redundancy health check failed")

    def check_health(self) -> None:
        bad = self.unhealthy_services() if self.vrrp_state == "PRIMARY" else []
        self._unhealthy_polls = self._unhealthy_polls + 1 if bad else 0
        if self.fault_reason is None:
            if self._unhealthy_polls >= UNHEALTHY_POLLS:
                self._give_up(f"{', '.join(bad)} down")
        elif time.monotonic() >= self._fault_until and not bad:
            self._healthy_again()

    async def _refresh_vips(self) -> None:
        doc = self.doc
        if doc is None:
            self.vips_held = []
            return
        result = await run([IP, "-json", "addr", "show"], timeout=5)
        if not result.ok:
            return
        have = _held(result.stdout)
        self.vips_held = [
            vip.address
            for vip in vip_plan(doc).all()
            if (vip.dev, str(IPv4Interface(vip.address))) in have
        ]

    def status(self) -> dict:
        red = self.doc.redundancy if self.doc is not None else None
        return {
            **super().status(),
            "enabled": self.vrrp_state is not None,
            "vrrp": {
                "state": self.vrrp_state,
                "since": _iso(self.since),
                "transitions": self.transitions,
                "peer": red.peer_ip if red else None,
                "priority": red.priority if red else None,
                "vips_held": list(self.vips_held),
                "fault_reason": self.fault_reason,
                "reloads": self.throttle.sent if self.throttle else 0,
            },
            "keepalived": self.keepalived.status(),
            "conntrackd": self.conntrack.status(),
        }
