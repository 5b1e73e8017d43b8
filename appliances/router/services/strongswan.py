"""Site-to-site and remote-access VPN with strongSwan's charon, driven over VICI.

charon runs under the agent's Supervisor with its own strongswan.conf (STRONGSWAN_CONF)
that names a VICI socket in the agent's state folder. Connections, secrets and pools
are loaded one by one (load-conn, load-shared, load-pool) and only those that differ
from what was loaded before are touched, so adding, changing or removing one peer or
user never disturbs another's SAs. A removed user's IKE SAs are terminated (found by
their remote EAP/XAuth identity).

The ESP data path is a setting, SKIFF_IPSEC_DATAPATH: ``kernel`` (default, the image)
or ``libipsec`` (strongSwan's user-space ESP over the TUN device ipsec0, for kernels
without ESP such as the lab's; it carries ESP in UDP only, so encapsulation is forced).
charon 5.9 keeps its pid file at /run/charon.pid (compiled in): several instances on
one machine need their own /run (the lab gives each agent a private one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliances.agent.service import Change, Service
from appliances.agent.supervisor import Supervisor
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write, read_text
from appliances.common.proc import run
from appliances.common.render import make_environment
from appliances.router import vpn_config
from appliances.router.document import RouterDocument
from appliances.router.vpn_config import Desired
from appliances.router.vpn_policy import PolicyError

log = logging.getLogger(__name__)

CHARON = os.environ.get("SKIFF_CHARON", "/usr/lib/ipsec/charon")
DATAPATH_ENV = "SKIFF_IPSEC_DATAPATH"
CONNTRACK = "conntrack"
START_TIMEOUT = 10.0
VICI_TIMEOUT = 10.0
INITIATE_TIMEOUT_MS = 15_000
BASE_PLUGINS = [
    "random",
    "nonce",
    "openssl",
    "aes",
    "sha1",
    "sha2",
    "md5",
    "hmac",
    "gmp",
    "pem",
    "pkcs1",
    "x509",
    "pubkey",
    "kdf",
    "drbg",
    "attr",
]
TAIL_PLUGINS = [
    "kernel-netlink",
    "socket-default",
    "vici",
    "updown",
    "eap-identity",
    "eap-mschapv2",
    "xauth-generic",
]

_env = make_environment("appliances.router", safe_chars=r"A-Za-z0-9._/ -")


def datapath() -> str:
    value = os.environ.get(DATAPATH_ENV, "kernel")
    if value not in vpn_config.DATAPATHS:
        raise ValueError(f"{DATAPATH_ENV}={value!r}: use kernel or libipsec")
    return value


def render_conf(router_id: str, vici_socket: Path, path: str) -> str:
    plugins = [*BASE_PLUGINS, *(["kernel-libipsec"] if path == "libipsec" else []), *TAIL_PLUGINS]
    return _env.get_template("strongswan.conf.j2").render(
        router_id=router_id, plugins=plugins, vici_socket=str(vici_socket)
    )


@dataclass
class _Plan:
    desired: Desired
    conf: str
    load_conns: list[str] = field(default_factory=list)
    unload_conns: list[str] = field(default_factory=list)
    load_secrets: list[str] = field(default_factory=list)
    unload_secrets: list[str] = field(default_factory=list)
    load_pools: list[str] = field(default_factory=list)
    unload_pools: list[str] = field(default_factory=list)
    removed_users: list[str] = field(default_factory=list)
    start: bool = False


class Vici:
    """A short-lived VICI session on the daemon's socket (blocking: call in a thread)."""

    def __init__(self, path: Path, timeout: float = VICI_TIMEOUT):
        import vici  # the agent image has it; imported late so pure modules need not

        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.session = vici.Session(self.sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Vici:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: Any) -> Any:
    """VICI answers bytes; make them str, recursively."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


class StrongswanService(Service):
    name = "vpn"
    primary_only = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.dir = ctx.state_dir / "strongswan"
        self.conf_path = self.dir / "strongswan.conf"
        self.socket = self.dir / "charon.vici"
        self.datapath = datapath()
        self.daemon = Supervisor(
            "charon",
            on_event=self.state.event,
            pidfile=self.dir / "charon.supervised.pid",
            env={"STRONGSWAN_CONF": str(self.conf_path)},
        )
        self._applied = Desired()
        self._loaded_pid: int | None = None  # the charon that holds _applied
        self._paused = False
        self._pending = Desired()  # what resume() loads (set while paused)
        self._errors: dict[str, str] = {}  # connection -> last initiate error
        self._initiating: dict[str, asyncio.Task] = {}

    # -- the contract ---------------------------------------------------------------------

    async def prepare(self, doc: RouterDocument) -> Change:
        try:
            desired = vpn_config.build(doc, self.datapath)
        except PolicyError as exc:
            raise ApplyError(self.name, str(exc)) from None
        conf = render_conf(doc.router_id, self.socket, self.datapath)
        wanted = bool(desired.conns)
        plan = _Plan(desired, conf)
        if self._paused:
            # Backup of a redundant pair: keep the configuration for resume() only.
            same = self._pending == desired and read_text(self.conf_path) == conf
            return Change(self.name, not same, "unchanged" if same else "kept for resume", plan)
        applied = self._applied if self._charon_holds_applied() else Desired()
        plan.start = wanted and (not self.daemon.running or read_text(self.conf_path) != conf)
        if plan.start:
            applied = Desired()  # a (re)started charon holds nothing
        plan.load_conns = [n for n, c in desired.conns.items() if applied.conns.get(n) != c]
        plan.unload_conns = [n for n in applied.conns if n not in desired.conns]
        plan.load_secrets = [n for n, s in desired.secrets.items() if applied.secrets.get(n) != s]
        plan.unload_secrets = [n for n in applied.secrets if n not in desired.secrets]
        plan.load_pools = [n for n, p in desired.pools.items() if applied.pools.get(n) != p]
        plan.unload_pools = [n for n in applied.pools if n not in desired.pools]
        plan.removed_users = [u for u in applied.users if u not in desired.users]
        stop = not wanted and self.daemon.running
        work = (
            plan.start
            or stop
            or plan.load_conns
            or plan.unload_conns
            or plan.load_secrets
            or plan.unload_secrets
            or plan.load_pools
            or plan.unload_pools
        )
        if not work:
            return Change(self.name, False, "unchanged", plan)
        summary = []
        if plan.start:
            summary.append("start charon")
        if stop:
            summary.append("stop charon")
        for label, items in (
            ("load", plan.load_conns),
            ("unload", plan.unload_conns),
            ("secrets", plan.load_secrets + plan.unload_secrets),
            ("pools", plan.load_pools + plan.unload_pools),
        ):
            if items:
                summary.append(f"{label} {', '.join(items)}")
        return Change(self.name, True, "; ".join(summary), plan)

    async def check(self, change: Change) -> None:
        """Proposals were mapped in prepare; a running charon also confirms it knows
        every algorithm they name (get-algorithms) before anything is loaded."""
        plan: _Plan = change.data
        if not self.daemon.running or plan.start:
            return
        try:
            algs = await asyncio.to_thread(self._algorithms)
        except Exception as exc:  # noqa: BLE001 - report, the load will tell more
            log.warning("get-algorithms failed: %s", exc)
            return
        for name in plan.load_conns:
            conn = plan.desired.conns[name]
            props = list(conn.get("proposals", []))
            for child in conn.get("children", {}).values():
                props += child.get("esp_proposals", [])
            for prop in props:
                unknown = [t for t in prop.split("-") if t != "default" and t not in algs]
                if unknown:
                    raise ApplyError(
                        self.name,
                        f"{name}: charon does not support {', '.join(unknown)} (proposal {prop})",
                    )

    async def commit(self, change: Change) -> None:
        plan: _Plan = change.data
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # secrets never touch a file, but the socket is in here
        if not plan.desired.conns:
            await self._stop_daemon()
            self._applied = plan.desired
            return
        if self._paused:
            atomic_write(self.conf_path, plan.conf)
            self._pending = plan.desired
            return
        if plan.start:
            atomic_write(self.conf_path, plan.conf)
            await self._start_daemon()
        try:
            await asyncio.to_thread(self._load, plan)
        except ApplyError:
            raise
        except Exception as exc:  # noqa: BLE001 - VICI errors carry charon's message
            raise ApplyError(
                self.name, f"loading over VICI failed: {exc}", "\n".join(self.daemon.tail(10))
            ) from None
        self._applied, self._loaded_pid = plan.desired, self.daemon.pid
        await self._forget_flows(plan)
        for name in plan.unload_conns:
            self._errors.pop(name, None)
        for name in plan.load_conns:
            if name in plan.desired.initiate:
                self._initiate_later(name, plan.desired.initiate[name])

    async def withdraw(self) -> None:
        await self._stop_daemon()
        self._applied = Desired()

    async def stop(self) -> None:
        await self._stop_daemon()

    async def pause(self) -> None:
        self._paused = True
        self._pending = self._applied
        await self._stop_daemon()

    async def resume(self) -> None:
        self._paused = False
        pending = self._pending
        if not pending.conns:
            return
        conf = read_text(self.conf_path)
        if conf is None:
            return
        await self._start_daemon()
        plan = _Plan(
            pending,
            conf,
            load_conns=list(pending.conns),
            load_secrets=list(pending.secrets),
            load_pools=list(pending.pools),
        )
        await asyncio.to_thread(self._load, plan)
        self._applied, self._loaded_pid = pending, self.daemon.pid
        for name, children in pending.initiate.items():
            self._initiate_later(name, children)

    async def _forget_flows(self, plan: _Plan) -> None:
        """Delete conntrack entries between newly loaded local and peer CIDRs: flows
        that began before the tunnel was configured were source-NATed to the
        internet, and their NAT binding would outlive the tunnel's arrival."""
        pairs = [
            (lc, pc)
            for name in plan.load_conns
            for child in plan.desired.conns[name].get("children", {}).values()
            for lc in child.get("local_ts", [])
            for pc in child.get("remote_ts", [])
        ]
        for lc, pc in pairs:
            try:
                res = await run([CONNTRACK, "-D", "-s", lc, "-d", pc], timeout=5)
            except OSError as exc:  # no conntrack tool: flows keep their NAT until idle
                log.warning("cannot forget flows %s -> %s: %s", lc, pc, exc)
                return
            if not res.ok and "0 flow entries" not in res.output:
                log.warning("conntrack -D -s %s -d %s: %s", lc, pc, res.output.strip())

    # -- daemon ---------------------------------------------------------------------------

    def _charon_holds_applied(self) -> bool:
        return self.daemon.running and self.daemon.pid == self._loaded_pid

    async def _start_daemon(self) -> None:
        self.socket.unlink(missing_ok=True)
        await self.daemon.restart([CHARON])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self.socket.exists():
                try:
                    await asyncio.to_thread(self._algorithms)
                    return
                except OSError:
                    pass
            if not self.daemon.running:
                break
            await asyncio.sleep(0.05)
        raise ApplyError(
            self.name, "charon did not start (no VICI socket)", "\n".join(self.daemon.tail(15))
        )

    async def _stop_daemon(self) -> None:
        for task in self._initiating.values():
            task.cancel()
        self._initiating.clear()
        await self.daemon.stop()
        self._loaded_pid = None

    # -- VICI (blocking; run in a thread) ---------------------------------------------------

    def _algorithms(self) -> set[str]:
        with Vici(self.socket) as v:
            answer = _text(v.session.get_algorithms())
        names: set[str] = set()
        for group in answer.values():
            if isinstance(group, dict):
                names |= {k.lower() for k in group}
        # get-algorithms names algorithms as charon registered them (e.g. AES_CBC,
        # HMAC_SHA1_96, MODP_1536); proposal tokens use the short keywords.
        return names | _keywords(names)

    def _load(self, plan: _Plan) -> None:
        with Vici(self.socket) as v:
            s = v.session
            for name in plan.unload_conns:
                self._terminate(s, {"ike": name})
                s.unload_conn({"name": name})
            for user in plan.removed_users:
                for sa in self._sas_of_user(s, user):
                    self._terminate(s, {"ike-id": sa})
            for sid in plan.unload_secrets:
                s.unload_shared({"id": sid})
            for sid in plan.load_secrets:
                s.load_shared({"id": sid, **plan.desired.secrets[sid]})
            for pool in plan.unload_pools:
                s.unload_pool({"name": pool})
            for pool in plan.load_pools:
                s.load_pool({pool: plan.desired.pools[pool]})
            for name in plan.load_conns:
                s.load_conn({name: plan.desired.conns[name]})
                # A changed connection: its old SAs were negotiated with the old
                # settings; end them (this connection's only) so they come back new.
                if name in self._applied.conns and self._charon_holds_applied():
                    self._terminate(s, {"ike": name})

    @staticmethod
    def _terminate(s, selector: dict) -> None:
        with contextlib.suppress(Exception):  # nothing to terminate is fine
            for _ in s.terminate({**selector, "timeout": "2000", "force": "yes"}):
                pass

    @staticmethod
    def _sas_of_user(s, user: str) -> list[str]:
        ids = []
        for entry in s.list_sas():
            for sa in _text(entry).values():
                if user in (sa.get("remote-eap-id"), sa.get("remote-xauth-id")):
                    ids.append(sa["uniqueid"])
        return ids

    def _initiate_later(self, name: str, children: list[str]) -> None:
        old = self._initiating.pop(name, None)
        if old:
            old.cancel()
        self._initiating[name] = asyncio.create_task(
            self._initiate(name, children), name=f"initiate-{name}"
        )

    async def _initiate(self, name: str, children: list[str]) -> None:
        for child in children:
            try:
                await asyncio.to_thread(self._initiate_blocking, name, child)
                self._errors.pop(name, None)
            except Exception as exc:  # noqa: BLE001 - kept as the connection's error
                self._errors[name] = str(exc)
                self.state.event(f"initiate {name}/{child}: {exc}")

    def _initiate_blocking(self, name: str, child: str) -> None:
        with Vici(self.socket, timeout=INITIATE_TIMEOUT_MS / 1000 + 5) as v:
            for _ in v.session.initiate(
                {"ike": name, "child": child, "timeout": str(INITIATE_TIMEOUT_MS)}
            ):
                pass

    # -- status -----------------------------------------------------------------------------

    def _sas(self) -> list[dict]:
        with Vici(self.socket, timeout=3) as v:
            return [_text(entry) for entry in v.session.list_sas()]

    def status(self) -> dict:
        return {**super().status(), "daemon": self.daemon.status(), "datapath": self.datapath}

    async def live_status(self) -> dict:
        """status() plus each connection's state, read from charon (list-sas) in a
        thread: the vici package's calls block."""
        base = self.status()
        if not self.daemon.running:
            base["connections"] = {
                name: {"state": "Disconnected", "reason": "charon not running"}
                for name in self._applied.conns
            }
            return base
        try:
            sas = await asyncio.to_thread(self._sas)
        except Exception as exc:  # noqa: BLE001
            base["error"] = f"list-sas: {exc}"
            return base
        base.update(summarise(self._applied, sas, self._errors))
        return base


def summarise(applied: Desired, sas: list[dict], errors: dict[str, str]) -> dict:
    """Per connection: Connected / Disconnected / Error, SA counts and bytes; remote
    access users with their virtual IPs."""
    by_conn: dict[str, list[dict]] = {}
    for entry in sas:
        for ike_name, sa in entry.items():
            by_conn.setdefault(ike_name, []).append(sa)
    conns = {}
    for name in applied.conns:
        ikes = by_conn.get(name, [])
        established = [sa for sa in ikes if sa.get("state") == "ESTABLISHED"]
        children = [c for sa in established for c in (sa.get("child-sas") or {}).values()]
        installed = [c for c in children if c.get("state") == "INSTALLED"]
        info: dict[str, Any] = {
            "ike_sas": len(established),
            "child_sas": len(installed),
            "bytes_in": sum(int(c.get("bytes-in", 0)) for c in installed),
            "bytes_out": sum(int(c.get("bytes-out", 0)) for c in installed),
        }
        if name in vpn_config.RA_CONNS:
            info["state"] = "Listening"
        elif installed:
            info["state"] = "Connected"
            info["ike_ids"] = [sa.get("uniqueid") for sa in established]
            info["spis"] = sorted(f"{c.get('spi-in')}/{c.get('spi-out')}" for c in installed)
        elif name in errors:
            info["state"], info["reason"] = "Error", errors[name]
        else:
            info["state"] = "Disconnected"
            if ikes:
                info["reason"] = f"IKE SA {ikes[0].get('state', '?')}"
        conns[name] = info
    users = []
    for name in vpn_config.RA_CONNS:
        for sa in by_conn.get(name, []):
            user = sa.get("remote-eap-id") or sa.get("remote-xauth-id")
            users.append(
                {
                    "user": user,
                    "connection": name,
                    "state": sa.get("state"),
                    "virtual_ips": sa.get("remote-vips") or [],
                    "remote": sa.get("remote-host"),
                    "ike_id": sa.get("uniqueid"),
                }
            )
    return {"connections": conns, "remote_access_users": users}


_KEYWORDS = {
    "aes_cbc": {"aes128", "aes192", "aes256"},
    "aes_gcm_16": {"aes128gcm16", "aes256gcm16"},
    "3des_cbc": {"3des"},
    "des_cbc": {"des"},
    "hmac_md5_96": {"md5"},
    "hmac_sha1_96": {"sha1"},
    "hmac_sha2_256_128": {"sha256"},
    "hmac_sha2_384_192": {"sha384"},
    "hmac_sha2_512_256": {"sha512"},
    "prf_hmac_sha2_256": {"prfsha256"},
    "prf_hmac_sha2_384": {"prfsha384"},
    "prf_hmac_sha2_512": {"prfsha512"},
    "prf_hmac_sha1": {"prfsha1"},
    "modp_768": {"modp768"},
    "modp_1024": {"modp1024"},
    "modp_1536": {"modp1536"},
    "modp_2048": {"modp2048"},
    "modp_3072": {"modp3072"},
    "modp_4096": {"modp4096"},
    "modp_6144": {"modp6144"},
    "modp_8192": {"modp8192"},
    "ecp_256": {"ecp256"},
    "ecp_384": {"ecp384"},
    "ecp_521": {"ecp521"},
    "curve_25519": {"curve25519"},
}


def _keywords(registered: set[str]) -> set[str]:
    out: set[str] = set()
    for alg, words in _KEYWORDS.items():
        if alg in registered:
            out |= words
    return out
