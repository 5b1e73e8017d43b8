"""A zone in a box: the lab's life cycle (up, down, guests) and its saved description.

Usage (as root)::

    lab = Lab("lab")
    await lab.up(guests=2)
    res = await lab.run_in("g1", ["wget", "-qO-", "http://203.0.113.1/"])
    await lab.down()

``down`` works from the lab name alone (the ``skf-<lab>-`` prefix), so it also
cleans up after a crash that lost the state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliances.lab import daemons, names, netns, topology
from appliances.lab.agentclient import AgentClient, AgentError, Reply
from appliances.lab.baseline import baseline_document, derive, dhcp_host
from appliances.lab.names import Guest, LabNames
from appliances.lab.pki import PkiPaths, create_lab_pki
from appliances.router.document import RouterDocument
from appliances.router.verify import parse_document

DEFAULT_BASE = Path("/var/lib/skiff/lab")
STATE_FILE = "lab.json"
MARKER = ".skiff-lab"
AGENT_HEALTH_TIMEOUT = 30.0
LEASE_TIMEOUT = 20.0
REQUIRED_TOOLS = ("ip", "unshare", "mount", "sysctl", "dnsmasq", "busybox", "nsenter")
UDHCPC_SCRIPT = Path(__file__).with_name("scripts") / "udhcpc.sh"

Progress = Callable[[str], None]


class LabError(RuntimeError):
    """A lab operation failed; the message says what to do about it."""


def default_state_dir(name: str) -> Path:
    """$SKIFF_LAB_DIR/<name> if set, else /var/lib/skiff/lab/<name>."""
    return Path(os.environ.get("SKIFF_LAB_DIR") or DEFAULT_BASE) / name


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab builds network namespaces: run as root (e.g. with sudo)")


def check_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (Debian: apt-get install "
                       "iproute2 util-linux procps dnsmasq busybox)")


class Lab:
    def __init__(self, name: str = names.DEFAULT_NAME, state_dir: str | Path | None = None, *,
                 agent_cmd: Sequence[str] | None = None, progress: Progress | None = None):
        self.names = LabNames(name)
        self.name = name
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(name)
        #: Command that runs the agent; the agent's own flags are appended to it.
        self.agent_cmd = list(agent_cmd or [sys.executable, "-m", "mgmt.cli", "agent"])
        self.progress: Progress = progress or (lambda _msg: None)
        self.control_octet: int | None = None
        self.guests: dict[str, Guest] = {}
        self.pids: dict[str, int] = {}
        self.document: RouterDocument | None = None

    # -- paths and names -----------------------------------------------------------------

    @property
    def router_id(self) -> str:
        return self.names.router_id

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths.in_dir(self.state_dir / "pki")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log(self, what: str) -> Path:
        return self.log_dir / f"{what}.log"

    def lease_file(self, guest: str) -> Path:
        return self.state_dir / "leases" / f"{guest}.lease"

    @property
    def control_ip(self) -> str:
        if self.control_octet is None:
            raise LabError(f"lab {self.name} has no control subnet yet: run skiff lab up")
        return str(names.control_addresses(self.control_octet)[1].ip)

    @property
    def agent_url(self) -> str:
        return f"https://{self.control_ip}:{names.AGENT_PORT}"

    def ns(self, role: str) -> str:
        """Namespace name of a role: switch, internet, router or a guest name (g1...)."""
        if role not in ("switch", "internet", "router") and role not in self.guests:
            Guest.from_name(role)  # raises for a name that cannot be a guest
        return self.names.ns(role)

    # -- running commands ----------------------------------------------------------------

    def argv_in(self, role: str, argv: Sequence[str]) -> list[str]:
        """argv that runs a command in a lab namespace.

        For the router this enters the agent's own mount namespace too (its private
        /run), when the agent is running.
        """
        ns = self.ns(role)
        if role == "router":
            pid = self.pids.get("agent")
            if pid and _in_namespace(pid, ns):
                return ["nsenter", "-t", str(pid), "-m", "-n", "--", *argv]
        return netns.exec_argv(ns, argv)

    async def run_in(self, role: str, argv: Sequence[str], *, check: bool = False,
                     timeout: float = 30.0, input: bytes | None = None) -> netns.Result:
        """Run argv in a lab namespace; returns rc, stdout and stderr."""
        return await netns.run(self.argv_in(role, argv), check=check, timeout=timeout,
                               input=input)

    def spawn_in(self, role: str, key: str, argv: Sequence[str],
                 env: dict[str, str] | None = None) -> int:
        """Start a long-running process in a lab namespace (logged, killed by down)."""
        pid = daemons.spawn(self.name, self.ns(role), argv, self.log(key), env)
        self.pids[key] = pid
        return pid

    # -- the agent -----------------------------------------------------------------------

    def agent(self, timeout: float = 60.0) -> AgentClient:
        return AgentClient(self.agent_url, self.router_id, self.pki, timeout=timeout)

    async def put_config(self, document: RouterDocument | dict) -> Reply:
        """PUT a document (valid or not) and return the agent's reply as is."""
        reply = await self.agent().put_config(document)
        if reply.ok and isinstance(document, RouterDocument):
            self.document = document
            self.save()
        return reply

    async def apply(self, document: RouterDocument) -> Reply:
        """PUT a document and raise AgentError unless it was applied; remember it."""
        reply = await self.agent().apply(document)
        self.document = document
        self.save()
        return reply

    def derive(self, **changes: Any) -> RouterDocument:
        """The last applied document with fields replaced and the generation bumped."""
        if self.document is None:
            raise LabError("no document applied yet")
        return derive(self.document, **changes)

    async def start_agent(self) -> int:
        agent_dir = self.state_dir / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        argv = [
            "unshare", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "appliances.lab.nsinit", "--tmpfs", "/run", "--",
            *self.agent_cmd,
            "--role", "router", "--id", self.router_id, "--state-dir", str(agent_dir),
            "--listen", self.control_ip, "--port", str(names.AGENT_PORT),
            "--ca", str(pki.ca_cert), "--cert", str(pki.server_cert), "--key", str(pki.server_key),
        ]
        pid = self.spawn_in("router", "agent", argv)
        self.save()
        self.progress(f"agent started (pid {pid}), waiting for {self.agent_url}/v1/health")
        try:
            await self.agent().wait_healthy(
                AGENT_HEALTH_TIMEOUT, alive=lambda: daemons.exited(pid) is None
                and netns.pid_alive(pid))
        except AgentError as exc:
            raise LabError(f"{exc}; see the agent log {self.log('agent')}:\n"
                           f"{daemons.tail(self.log('agent'))}") from None
        return pid

    async def stop_agent(self, grace: float = 5.0) -> None:
        pid = self.pids.pop("agent", None)
        if pid:
            await netns.kill_pids(lambda: [pid] if netns.pid_alive(pid) else [], grace)
            daemons.reap()
            self.save()

    # -- up ------------------------------------------------------------------------------

    async def up(self, guests: int = 2, *, lease_timeout: float = LEASE_TIMEOUT) -> dict:
        """Build the lab, start the agent, apply the baseline document, start the guests.

        Leftovers of a lab with the same name are removed first.
        """
        check_root()
        check_tools()
        if not 0 <= guests <= names.MAX_GUESTS:
            raise LabError(f"--guests must be between 0 and {names.MAX_GUESTS}")
        if await self.leftovers():
            self.progress(f"removing leftovers of lab {self.name}")
        await self.down(quiet=True)
        self._make_state_dir()
        self.guests, self.pids, self.document = {}, {}, None
        n = self.names

        self.progress(f"building namespaces {n.prefix}*")
        await topology.build_switch(n)
        await asyncio.gather(topology.build_internet(n), topology.build_router(n))
        async with topology.allocation_lock():
            self.control_octet = await topology.choose_control_octet(self.name)
            await topology.build_control(n, self.control_octet)
        self.save()
        self.progress(f"control network {n.control_bridge}: host "
                      f"169.254.{self.control_octet}.1, router {self.control_ip}")
        self._start_internet()

        self.progress("creating the lab PKI")
        await asyncio.to_thread(create_lab_pki, self.state_dir / "pki", self.router_id,
                                self.control_ip)
        await self.start_agent()
        wanted = [Guest(k) for k in range(1, guests + 1)]
        doc = baseline_document(self.router_id, names.control_addresses(self.control_octet)[1],
                                wanted)
        self.progress(f"applying the baseline document (generation {doc.generation})")
        try:
            await self.apply(doc)
        except AgentError as exc:
            raise LabError(f"{exc}; see the agent log {self.log('agent')}") from None

        if wanted:
            self.progress(f"starting guests {', '.join(g.name for g in wanted)}")
            await asyncio.gather(*(self._start_guest(g) for g in wanted))
            self.save()
            await self.wait_leases([g.name for g in wanted], lease_timeout)
        self.save()
        self.progress(f"lab {self.name} is up")
        return self.describe()

    def _make_state_dir(self) -> None:
        """Create the state folder readable by daemons that drop root (dnsmasq runs as
        nobody and reads its files from the agent's state folder inside it)."""
        d = self.state_dir.resolve()
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        for parent in d.parents:
            if not parent.stat().st_mode & 0o001:
                raise LabError(
                    f"the state folder {d} is inside {parent}, which other users cannot enter "
                    f"(mode {parent.stat().st_mode & 0o777:o}); daemons that drop root, like "
                    "dnsmasq, could not read their files. Use another --state-dir "
                    "(e.g. one made with mktemp -d under /tmp or /var/lib/skiff/lab)")
        (d / MARKER).write_text(self.name + "\n")

    def _start_internet(self) -> None:
        ip = str(names.INTERNET_IP)
        self.spawn_in("internet", "internet-httpd",
                      [sys.executable, "-m", "appliances.lab.httpd", "--name", "internet",
                       "--port", "80"])
        self.spawn_in("internet", "internet-dns", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={ip}",
            f"--local=/{names.DOMAIN}/", "--local=/internet.test/",
            *(f"--host-record={dns_name},{ip}" for dns_name in names.INTERNET_DNS_NAMES),
            f"--pid-file={self.state_dir / 'internet-dnsmasq.pid'}",
            "--log-facility=-", "--log-queries",
        ])

    async def _start_guest(self, guest: Guest) -> None:
        await topology.build_guest(self.names, guest)
        self.guests[guest.name] = guest
        script = self.state_dir / "udhcpc.sh"
        if not script.exists():
            shutil.copyfile(UDHCPC_SCRIPT, script)
            script.chmod(0o755)
        lease = self.lease_file(guest.name)
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.unlink(missing_ok=True)
        self.spawn_in(guest.name, f"{guest.name}-httpd",
                      [sys.executable, "-m", "appliances.lab.httpd", "--name", guest.name,
                       "--port", "80"])
        self.spawn_in(guest.name, f"{guest.name}-dhcp", [
            "busybox", "udhcpc", "-f", "-i", "eth0", "-s", str(script),
            "-x", f"hostname:{guest.name}", "-t", "5", "-T", "1", "-A", "2",
            "-O", "staticroutes", "-O", "mtu", "-O", "search",
        ], env={
            "SKIFF_RESOLV_CONF": str(netns.resolv_conf_path(self.ns(guest.name))),
            "SKIFF_LEASE_FILE": str(lease),
        })

    # -- guests --------------------------------------------------------------------------

    def lease(self, guest: str) -> dict[str, str] | None:
        """The guest's last DHCP event as written by udhcpc.sh, or None."""
        try:
            text = self.lease_file(guest).read_text()
        except OSError:
            return None
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def has_lease(self, guest: str) -> bool:
        lease = self.lease(guest)
        return bool(lease and lease.get("event") in ("bound", "renew") and lease.get("ip"))

    async def wait_leases(self, guests: Sequence[str], timeout: float = LEASE_TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = list(guests)
        self.progress(f"waiting up to {timeout:.0f} s for DHCP leases of {', '.join(pending)}")
        while pending and loop.time() < deadline:
            for g in list(pending):
                if self.has_lease(g):
                    pending.remove(g)
                    lease = self.lease(g) or {}
                    want = str(self.guests[g].ip) if g in self.guests else "?"
                    note = "" if lease.get("ip") == want else f" (expected {want})"
                    self.progress(f"  {g}: {lease.get('ip')}/{lease.get('prefix')}{note}")
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            logs = ", ".join(str(self.log(f"{g}-dhcp")) for g in pending)
            raise LabError(f"no DHCP lease for {', '.join(pending)} within {timeout:.0f} s; "
                           f"see {logs} and the agent log {self.log('agent')}")

    async def add_guest(self, index: int | None = None, *, wait: bool = True,
                        timeout: float = LEASE_TIMEOUT) -> Guest:
        """Add guest gK (next free K by default): DHCP host in the document, then the guest."""
        if index is None:
            index = next(k for k in range(1, names.MAX_GUESTS + 1) if f"g{k}" not in self.guests)
        guest = Guest(index)
        if guest.name in self.guests:
            raise LabError(f"guest {guest.name} already exists")
        if self.document is not None:
            hosts = [h for h in self.document.dhcp_hosts if h.mac != guest.mac]
            await self.apply(self.derive(dhcp_hosts=[*hosts, dhcp_host(guest)]))
        await self._start_guest(guest)
        self.save()
        if wait:
            await self.wait_leases([guest.name], timeout)
        return guest

    async def remove_guest(self, name: str) -> None:
        guest = self.guests.pop(name, None) or Guest.from_name(name)
        await topology.remove_guest(self.names, guest)
        for key in (f"{name}-dhcp", f"{name}-httpd"):
            self.pids.pop(key, None)
        self.lease_file(name).unlink(missing_ok=True)
        daemons.reap()
        if self.document is not None:
            hosts = [h for h in self.document.dhcp_hosts if h.mac != guest.mac]
            if len(hosts) != len(self.document.dhcp_hosts):
                await self.apply(self.derive(dhcp_hosts=hosts))
        self.save()

    async def renew(self, guest: str, timeout: float = 10.0) -> dict[str, str]:
        """Make a guest's DHCP client renew now (SIGUSR1), e.g. after a DHCP option change;
        returns the new lease once the script has recorded it."""
        pid = self.pids.get(f"{guest}-dhcp")
        if not pid or not _in_namespace(pid, self.ns(guest)):
            raise LabError(f"no DHCP client running for {guest}")
        path = self.lease_file(guest)
        before = path.stat().st_mtime_ns if path.exists() else 0
        os.kill(pid, signal.SIGUSR1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if path.exists() and path.stat().st_mtime_ns != before and self.has_lease(guest):
                return self.lease(guest) or {}
            await asyncio.sleep(0.1)
        raise LabError(f"{guest} did not renew its lease within {timeout:.0f} s; "
                       f"see {self.log(f'{guest}-dhcp')}")

    # -- down ----------------------------------------------------------------------------

    async def leftovers(self) -> dict[str, list[str]]:
        """Everything with this lab's prefix that exists now."""
        prefix = self.names.prefix
        found = {
            "namespaces": [ns for ns in await netns.list_namespaces() if ns.startswith(prefix)],
            "links": [link for link in await netns.link_names() if link.startswith(prefix)],
            "netns_etc": sorted(str(p) for p in netns.NETNS_ETC.glob(f"{prefix}*")),
            "processes": [str(p) for p in netns.pids_with_env(daemons.ENV_MARK, self.name)],
        }
        return {k: v for k, v in found.items() if v}

    async def down(self, *, quiet: bool = False) -> None:
        """Kill every process in the lab's namespaces, delete them, the root-namespace links,
        /etc/netns/<ns> and the state folder. Works from the name alone."""
        prefix = self.names.prefix
        namespaces = [ns for ns in await netns.list_namespaces() if ns.startswith(prefix)]
        if namespaces and not quiet:
            self.progress(f"stopping processes in {len(namespaces)} namespaces")
        await asyncio.gather(*(netns.kill_namespace_processes(ns) for ns in namespaces))
        await netns.kill_pids(lambda: netns.pids_with_env(daemons.ENV_MARK, self.name))
        await asyncio.gather(*(netns.delete_namespace(ns) for ns in namespaces))
        for link in await netns.link_names():
            if link.startswith(prefix):
                await netns.delete_link(link)
        for etc in netns.NETNS_ETC.glob(f"{prefix}*"):
            await netns.delete_namespace(etc.name)  # only the /etc/netns part is left
        daemons.reap()
        self._remove_state_dir()
        left = await self.leftovers()
        if left:
            raise LabError(f"could not remove everything of lab {self.name}: {left}")
        if not quiet:
            self.progress(f"lab {self.name} is down")

    def _remove_state_dir(self) -> None:
        d = self.state_dir
        if not d.exists():
            return
        marker = d / MARKER
        if marker.is_file() and marker.read_text().strip() == self.name:
            shutil.rmtree(d, ignore_errors=True)
        elif not _remove_if_empty(d):
            self.progress(f"left {d} in place: it has no {MARKER} marker of lab {self.name}")

    # -- description and state -----------------------------------------------------------

    def describe(self) -> dict:
        n = self.names
        octet = self.control_octet
        control = None
        if octet is not None:
            host, router = names.control_addresses(octet)
            control = {"bridge": n.control_bridge, "host_ip": str(host),
                       "router_ip": str(router), "subnet": str(host.network)}
        return {
            "name": self.name,
            "prefix": n.prefix,
            "state_dir": str(self.state_dir),
            "namespaces": {role: n.ns(role) for role in ("switch", "internet", "router",
                                                         *sorted(self.guests, key=_guest_key))},
            "router": {
                "id": self.router_id,
                "namespace": n.router,
                "guest_ip": f"{names.GUEST_GATEWAY}/{names.GUEST_CIDR.prefixlen}",
                "public_ip": f"{names.ROUTER_PUBLIC_IP}/{names.PUBLIC_CIDR.prefixlen}",
                "spare_public_ips": [str(ip) for ip in names.SPARE_PUBLIC_IPS],
                "control_ip": self.control_ip if octet is not None else None,
                "agent_url": self.agent_url if octet is not None else None,
                "agent_log": str(self.log("agent")),
                "generation": self.document.generation if self.document else None,
            },
            "control": control,
            "internet": {
                "namespace": n.internet,
                "ip": str(names.INTERNET_IP),
                "remote_client_ips": [str(ip) for ip in names.REMOTE_CLIENT_IPS],
                "http": f"http://{names.INTERNET_IP}/",
                "dns": str(names.INTERNET_IP),
                "dns_names": list(names.INTERNET_DNS_NAMES),
            },
            "pki": {
                "ca": str(self.pki.ca_cert),
                "client_cert": str(self.pki.client_cert),
                "client_key": str(self.pki.client_key),
                "server_cert": str(self.pki.server_cert),
            },
            "guests": [
                {"name": g.name, "namespace": n.ns(g.name), "mac": g.mac, "ip": str(g.ip),
                 "lease": (self.lease(g.name) or {}).get("ip")}
                for g in sorted(self.guests.values(), key=lambda g: g.index)
            ],
            "pids": dict(self.pids),
        }

    def save(self) -> None:
        if not self.state_dir.is_dir():
            return
        data = self.describe()
        data["_state"] = {
            "control_octet": self.control_octet,
            "guests": sorted(g.index for g in self.guests.values()),
            "document": self.document.model_dump(mode="json") if self.document else None,
            "agent_cmd": self.agent_cmd,
        }
        tmp = self.state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_dir / STATE_FILE)

    @classmethod
    def load(cls, name: str = names.DEFAULT_NAME, state_dir: str | Path | None = None,
             progress: Progress | None = None) -> Lab:
        """The lab as saved by up; raises LabError when there is no saved state."""
        lab = cls(name, state_dir, progress=progress)
        path = lab.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"lab {name} has no state at {path}: run skiff lab up "
                           "(or pass the --state-dir it was built with)") from None
        state = data.get("_state", {})
        lab.control_octet = state.get("control_octet")
        lab.guests = {f"g{k}": Guest(k) for k in state.get("guests", [])}
        lab.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        lab.agent_cmd = state.get("agent_cmd") or lab.agent_cmd
        if state.get("document"):
            lab.document = parse_document(state["document"])
        return lab

    async def status(self) -> dict:
        """The description plus what is alive now (namespaces, processes, agent health)."""
        desc = self.describe()
        existing = set(await netns.list_namespaces())
        desc["alive"] = {
            "namespaces": {role: ns in existing for role, ns in desc["namespaces"].items()},
            "processes": {key: netns.pid_alive(pid) for key, pid in self.pids.items()},
        }
        try:
            reply = await self.agent(timeout=5).health(timeout=5)
            desc["alive"]["agent_health"] = {"status": reply.status, "body": reply.body}
        except Exception as exc:  # noqa: BLE001 - any failure is a status to report
            desc["alive"]["agent_health"] = {"error": f"{type(exc).__name__}: {exc}"}
        return desc


def _remove_if_empty(d: Path) -> bool:
    """An empty folder is ours to remove too (a state dir that never got its marker)."""
    with contextlib.suppress(OSError):
        if not any(d.iterdir()):
            d.rmdir()
            return True
    return False


def _guest_key(name: str) -> int:
    return Guest.from_name(name).index


def _in_namespace(pid: int, ns: str) -> bool:
    """True if pid is alive and sits in network namespace ns."""
    try:
        return (os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.NETNS_RUN / ns).st_ino
                and netns.pid_alive(pid))
    except OSError:
        return False
