"""Load balancing with one HAProxy per router, in master-worker mode.

An apply takes one of three paths, chosen in prepare:

- **runtime**: only members' weights or enabled flags changed. They are set
  through the runtime API (``set server``) and the file is rewritten to match,
  with no reload at all.
- **reload**: anything else. The candidate file is checked with ``haproxy -c``
  (kept as ``haproxy.cfg.new`` when refused, with the checker's output in the
  error), the servers' state is saved to the server-state file so health
  survives, the file is swapped and the master gets SIGUSR2. The master starts
  new workers that take over the listening sockets from the old ones (the admin
  socket has ``expose-fd listeners``), so no connection is refused; old workers
  finish their sessions. The reload counts as done when the master says
  "Loading success.".
- **start/stop**: the first rule starts HAProxy, the last one removed stops it.

TLS certificates are written as ``certs/<rule>-<digest>.pem`` (mode 0600):
a new certificate is a new file, so the check can see it without touching the
file the running workers use; files no longer referenced are removed after.
"""

from __future__ import annotations

import hashlib
import logging
import re
import resource
import signal
from dataclasses import dataclass, field
from pathlib import Path

from appliances.agent.service import Change, Service
from appliances.agent.supervisor import Supervisor
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write, read_text
from appliances.common.proc import run
from appliances.common.render import Escaped, RenderError, make_environment
from appliances.router import haproxy_runtime as rt
from appliances.router.document import RouterDocument
from appliances.router.sections.load_balancing import LbRule

log = logging.getLogger(__name__)

HAPROXY = "haproxy"
CONFIG = "haproxy.cfg"
CANDIDATE = "haproxy.cfg.new"
LOAD_TIMEOUT = 30.0
OLD_WORKER_TIMEOUT = 3.0
_NEW_WORKER = re.compile(r"New worker \((\d+)\) forked")
MAXCONN = 20_000
#: An empty server-state file (format version 1), so the first start has one to read.
EMPTY_STATE = "1\n"


def _single_quoted(value: object) -> Escaped:
    """HAProxy's strong quoting: nothing inside single quotes is special except
    the quote itself, which the document's types already exclude."""
    text = str(value)
    if any(ch in text for ch in "'\\\n\r") or not text.isprintable():
        raise RenderError(f"refusing to quote {text[:80]!r} for haproxy.cfg")
    return Escaped(f"'{text}'")


_env = make_environment(
    "appliances.router", safe_chars=r"A-Za-z0-9._:/-", filters={"sq": _single_quoted}
)


@dataclass
class _Plan:
    doc: RouterDocument
    mode: str  # start | reload | runtime | stop
    config: str = ""
    certs: dict[str, tuple[Path, str]] = field(default_factory=dict)  # rule id -> file, PEM
    commands: list[str] = field(default_factory=list)  # runtime API commands


class HaproxyService(Service):
    name = "haproxy"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.dir = ctx.state_dir / "haproxy"
        self.socket = self.dir / "haproxy.sock"
        self.daemon = Supervisor(
            "haproxy", on_event=self.state.event, pidfile=self.dir / "haproxy.pid"
        )
        self._applied: RouterDocument | None = None
        self.reloads = 0
        self._worker: int | None = None
        self.runtime_updates = 0

    def _argv(self, config: Path) -> list[str]:
        return [HAPROXY, "-W", "-db", "-f", str(config)]

    # -- prepare / check / commit ---------------------------------------------------------

    async def prepare(self, doc: RouterDocument) -> Change:
        prev = self._applied
        running = self.daemon.running
        rules = doc.load_balancers
        if not rules:
            if running:
                return Change(self.name, True, "stop: no load balancer rules", _Plan(doc, "stop"))
            self._applied = doc
            return Change(self.name, False, "unchanged")
        if prev is not None and running and prev.load_balancers is rules:
            return Change(self.name, False, "unchanged")
        certs = {r.id: self._cert(r) for r in rules if r.tls is not None}
        config = render(
            doc,
            self.dir,
            {k: v[0] for k, v in certs.items()},
            nonlocal_bind=doc.redundancy is not None,
        )
        if running and config == read_text(self.dir / CONFIG):
            self._applied = doc
            return Change(self.name, False, "unchanged")
        if running and prev is not None and _same_structure(prev.load_balancers, rules):
            commands = runtime_commands(prev.load_balancers, rules)
            plan = _Plan(doc, "runtime", config, certs, commands)
            return Change(self.name, True, f"runtime API: {len(commands)} member update(s)", plan)
        mode = "reload" if running else "start"
        return Change(
            self.name, True, f"{mode}: {len(rules)} rule(s)", _Plan(doc, mode, config, certs)
        )

    async def check(self, change: Change) -> None:
        plan: _Plan = change.data
        if plan.mode not in ("start", "reload"):
            return
        self._write_certs(plan)
        candidate = self.dir / CANDIDATE
        atomic_write(candidate, plan.config, mode=0o600)
        result = await run([HAPROXY, "-c", "-q", "-f", str(candidate)])
        if not result.ok:
            raise ApplyError(
                self.name,
                f"haproxy -c refused the configuration (kept as {candidate})",
                result.output,
            )
        candidate.unlink(missing_ok=True)

    async def commit(self, change: Change) -> None:
        plan: _Plan = change.data
        self._applied = None  # until this succeeds
        if plan.mode == "stop":
            await self.daemon.stop()
            (self.dir / CONFIG).unlink(missing_ok=True)
            self._remove_unused_certs(set())
        elif plan.mode == "runtime":
            atomic_write(self.dir / CONFIG, plan.config, mode=0o600)
            await self._runtime(plan.commands)
        else:
            self._write_certs(plan)  # already there after check; cheap when unchanged
            if plan.mode == "reload":
                await self._save_server_state(plan.doc)
            atomic_write(self.dir / CONFIG, plan.config, mode=0o600)
            if not (self.dir / "server-state").exists():
                atomic_write(self.dir / "server-state", EMPTY_STATE, mode=0o600)
            if plan.mode == "start":
                await self._start()
            else:
                await self._reload()
            self._remove_unused_certs({path for path, _pem in plan.certs.values()})
        self._applied = plan.doc

    async def withdraw(self) -> None:
        await self.daemon.stop()
        self._applied = None

    async def stop(self) -> None:
        await self.daemon.stop()

    # -- the daemon ----------------------------------------------------------------------

    async def _start(self) -> None:
        mark = self.daemon.log_mark
        await self.daemon.restart(self._argv(self.dir / CONFIG))
        await self._wait_loaded(mark, "start")

    async def _reload(self) -> None:
        old = self._worker
        mark = self.daemon.log_mark
        self.daemon.signal(signal.SIGUSR2)
        await self._wait_loaded(mark, "reload")
        self.reloads += 1
        if old is not None:
            await self._wait_old_worker_unbound(old, mark)

    async def _wait_loaded(self, mark: int, what: str) -> None:
        try:
            line = await self.daemon.wait_for_line(
                lambda text: "Loading success" in text or "Loading failure" in text,
                mark,
                LOAD_TIMEOUT,
            )
        except TimeoutError:
            raise ApplyError(
                self.name, f"haproxy did not confirm the {what}", "\n".join(self.daemon.tail(15))
            ) from None
        if "Loading failure" in line:
            raise ApplyError(self.name, f"haproxy {what} failed", "\n".join(self.daemon.tail(15)))
        forked = await self.daemon.wait_for_line(_NEW_WORKER.search, mark, 1.0)
        match = _NEW_WORKER.search(forked)
        self._worker = int(match.group(1)) if match else None

    async def _wait_old_worker_unbound(self, old: int, mark: int) -> None:
        """The new worker accepts on the same sockets at once, but the old one keeps
        accepting too until its soft stop unbinds its proxies: wait for that, so that
        every connection after the apply answers sees the new configuration."""
        tag = f"({old})"

        def unbound(text: str) -> bool:
            return tag in text and ("Proxy <HTTPCLIENT> stopped" in text or "exited" in text)

        try:
            await self.daemon.wait_for_line(unbound, mark, OLD_WORKER_TIMEOUT)
        except TimeoutError:
            self.state.event(f"old worker {old} did not report its soft stop in time")

    async def _save_server_state(self, doc: RouterDocument) -> None:
        """Keep members' health across the reload (see rt.carry_server_state)."""
        try:
            text = await rt.command(self.socket, "show servers state")
        except rt.RuntimeApiError as exc:
            log.warning("could not save the server state before the reload: %s", exc)
            return
        desired = {
            (f"lb_{rule.id}", m.id): rt.DesiredServer(
                m.ip, m.port or rule.private_port, m.weight, m.enabled
            )
            for rule in doc.load_balancers
            for m in rule.members
        }
        atomic_write(self.dir / "server-state", rt.carry_server_state(text, desired), mode=0o600)

    async def _runtime(self, commands: list[str]) -> None:
        try:
            problems = await rt.run_commands(self.socket, commands)
        except rt.RuntimeApiError as exc:
            raise ApplyError(self.name, "the runtime API update failed", str(exc)) from None
        if problems:
            raise ApplyError(
                self.name, "haproxy refused a runtime API update", "\n".join(problems)[:4000]
            )
        self.runtime_updates += len(commands)

    # -- certificates --------------------------------------------------------------------

    def _cert(self, rule: LbRule) -> tuple[Path, str]:
        return certificate_file(self.dir, rule)

    def _write_certs(self, plan: _Plan) -> None:
        for path, pem in plan.certs.values():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(path, pem, mode=0o600)

    def _remove_unused_certs(self, keep: set[Path]) -> None:
        folder = self.dir / "certs"
        if folder.is_dir():
            for path in folder.glob("*.pem"):
                if path not in keep:
                    path.unlink(missing_ok=True)

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            **super().status(),
            "daemon": self.daemon.status(),
            "reloads": self.reloads,
            "runtime_updates": self.runtime_updates,
        }

    async def live_status(self) -> dict:
        """status() plus each rule's members and traffic, read from the runtime API."""
        out = self.status()
        if not self.daemon.running or self._applied is None:
            return out
        try:
            frontends, _backends, servers = rt.parse_stat(
                await rt.command(self.socket, "show stat", timeout=2.0)
            )
        except rt.RuntimeApiError as exc:
            out["rules_error"] = str(exc)
            return out
        out["rules"] = rule_status(self._applied.load_balancers, frontends, servers)
        return out


def certificate_file(directory: Path, rule: LbRule) -> tuple[Path, str]:
    """Where a rule's certificate and key go (named by their digest) and the PEM."""
    assert rule.tls is not None
    pem = rule.tls.certificate.rstrip("\n") + "\n" + rule.tls.private_key.rstrip("\n") + "\n"
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    return directory / "certs" / f"{rule.id}-{digest}.pem", pem


def maxconn(rules: list[LbRule]) -> int:
    """HAProxy needs two descriptors per connection plus one per listener and per
    server, and refuses to start when it cannot raise its own limit that far: stay
    inside this process's limit (which HAProxy inherits)."""
    fixed = 500 + len(rules) + sum(len(r.members) for r in rules)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = min(n for n in (*limits, 2 * MAXCONN + fixed) if n != resource.RLIM_INFINITY)
    return max(256, min(MAXCONN, (limit - fixed) // 2))


def render(
    doc: RouterDocument, directory: Path, certs: dict[str, Path], *, nonlocal_bind: bool = False
) -> str:
    return _env.get_template("haproxy.cfg.j2").render(
        router_id=doc.router_id,
        dir=str(directory),
        maxconn=maxconn(doc.load_balancers),
        rules=doc.load_balancers,
        certs={k: str(v) for k, v in certs.items()},
        nonlocal_bind=nonlocal_bind,
    )


def _structure(rule: LbRule) -> tuple:
    """What a rule is apart from its members' weights and enabled flags."""
    return (
        rule.model_copy(update={"members": []}),
        tuple((m.id, m.ip, m.port) for m in rule.members),
    )


def _same_structure(old: list[LbRule], new: list[LbRule]) -> bool:
    if len(old) != len(new):
        return False
    return all(a is b or _structure(a) == _structure(b) for a, b in zip(old, new, strict=True))


def runtime_commands(old: list[LbRule], new: list[LbRule]) -> list[str]:
    """``set server`` commands turning ``old``'s member weights and states into ``new``'s
    (same structure)."""
    commands = []
    for before, after in zip(old, new, strict=True):
        if before is after:
            continue
        for m0, m1 in zip(before.members, after.members, strict=True):
            server = f"lb_{after.id}/{m1.id}"
            if m0.weight != m1.weight:
                commands.append(f"set server {server} weight {m1.weight}")
            if m0.enabled != m1.enabled:
                commands.append(f"set server {server} state {'ready' if m1.enabled else 'maint'}")
    return commands


def rule_status(rules: list[LbRule], frontends: dict, servers: list) -> dict:
    by_backend: dict[str, list] = {}
    for s in servers:
        by_backend.setdefault(s.backend, []).append(s)
    out = {}
    for rule in rules:
        name = f"lb_{rule.id}"
        fe = frontends.get(name)
        members = {
            s.server: {
                "status": s.status,
                "weight": s.weight,
                "sessions": s.sessions,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
            }
            for s in by_backend.get(name, [])
        }
        out[rule.id] = {
            "listener": f"{rule.public_ip}:{rule.public_port}",
            "members_up": sum(1 for m in members.values() if m["status"].startswith("UP")),
            "members_down": sum(1 for m in members.values() if not m["status"].startswith("UP")),
            "sessions": fe.sessions if fe else 0,
            "bytes_in": fe.bytes_in if fe else 0,
            "bytes_out": fe.bytes_out if fe else 0,
            "members": members,
        }
    return out
