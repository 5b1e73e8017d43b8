"""A zone in a box: the lab's life cycle (up, down, guests) and its saved description.

Usage (as root)::

    lab = Lab("lab")
    await lab.up(guests=2)
    res = await lab.run_in("g1", ["wget", "-qO-", "http://203.0.113.1/"])
    await lab.down()

Options of ``up``: ``networks=2`` adds a second isolated network (router2, guests
h1..hN in 10.1.2.0/24, public 203.0.113.20); ``redundant=True`` adds router "rb" on
the same segments as "router" (its agent runs, no document is applied to it);
``roadwarrior=True`` adds the client namespace "rw" (203.0.113.50 on the public
segment). Everything that means a router takes its name: ``lab.apply(doc,
router="router2")``, ``lab.agent("rb")``, ``lab.run_in("router2", ...)``; the default
is "router".

``down`` works from the lab name alone (the ``skf-<lab>-`` prefix), so it also
cleans up after a crash that lost the state folder.

``Lab(name, image=ARCHIVE)`` (``skiff lab up --image``) runs the routers from a
built system-VM root file system archive instead of this machine's Python: the
image's own ``skiff boot --run`` over an overlay of its shared extraction, with
a boot configuration made from the lab PKI (appliances.image.imageroot). The
agent's state folder is then inside the router's writable layer
(``<state>/appliance-<router>/root/upper/var/lib/skiff/agent``).
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
from appliances.lab.pki import PkiPaths, add_server_cert, create_lab_pki
from appliances.router.document import RouterDocument
from appliances.router.verify import parse_document

DEFAULT_BASE = Path("/var/lib/skiff/lab")
STATE_FILE = "lab.json"
MARKER = ".skiff-lab"
AGENT_HEALTH_TIMEOUT = 30.0
LEASE_TIMEOUT = 20.0
REQUIRED_TOOLS = ("ip", "unshare", "mount", "sysctl", "dnsmasq", "busybox", "nsenter")
UDHCPC_SCRIPT = Path(__file__).with_name("scripts") / "udhcpc.sh"
#: The agents' IPsec data path (see appliances.router.services.strongswan).
IPSEC_DATAPATH_ENV = "SKIFF_IPSEC_DATAPATH"

Progress = Callable[[str], None]


class LabError(RuntimeError):
    """A lab operation failed; the message says what to do about it."""


def internet_services(state_dir: Path) -> dict[str, list[str]]:
    """The lab internet's servers (key: argv): HTTP on port 80 and a DNS server that
    answers the lab's names with INTERNET_IP."""
    ip = str(names.INTERNET_IP)
    return {
        "internet-httpd": [sys.executable, "-m", "appliances.lab.httpd", "--name", "internet",
                           "--port", "80"],
        "internet-dns": [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={ip}",
            f"--local=/{names.DOMAIN}/", "--local=/internet.test/",
            *(f"--host-record={dns_name},{ip}" for dns_name in names.INTERNET_DNS_NAMES),
            f"--pid-file={state_dir / 'internet-dnsmasq.pid'}",
            "--log-facility=-", "--log-queries",
        ],
    }


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
                 agent_cmd: Sequence[str] | None = None, progress: Progress | None = None,
                 image: str | Path | None = None):
        self.names = LabNames(name)
        self.name = name
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(name)
        #: Command that runs the agent; the agent's own flags are appended to it.
        self.agent_cmd = list(agent_cmd or [sys.executable, "-m", "mgmt.cli", "agent"])
        self.progress: Progress = progress or (lambda _msg: None)
        #: The system-VM root file system archive the routers run from (None: this
        #: machine's Python, agent_cmd).
        self.image = str(Path(image).resolve()) if image else None
        self.control_octet: int | None = None
        self.guests: dict[str, Guest] = {}
        self.pids: dict[str, int] = {}
        #: Last document applied per router name.
        self.documents: dict[str, RouterDocument] = {}
        self.networks = 1
        self.redundant = False
        self.roadwarrior = False

    # -- paths and names -----------------------------------------------------------------

    @property
    def document(self) -> RouterDocument | None:
        """The last document applied to "router" (see ``documents`` for the others)."""
        return self.documents.get("router")

    @document.setter
    def document(self, doc: RouterDocument | None) -> None:
        if doc is None:
            self.documents.pop("router", None)
        else:
            self.documents["router"] = doc

    @property
    def routers(self) -> tuple[str, ...]:
        """Names of the routers this lab has: router, then rb, router2 when built."""
        extra = ((names.REDUNDANT_ROUTER,) if self.redundant else ()) + tuple(
            names.NETWORKS[k].router for k in range(2, self.networks + 1))
        return ("router", *extra)

    def _spec(self, router: str) -> names.RouterSpec:
        if router not in self.routers:
            raise LabError(f"lab {self.name} has no router {router!r} (it has "
                           f"{', '.join(self.routers)})")
        return names.ROUTERS[router]

    @property
    def router_id(self) -> str:
        return self.names.router_id

    def router_id_of(self, router: str = "router") -> str:
        return self._spec(router).router_id(self.name)

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths.in_dir(self.state_dir / "pki")

    def pki_of(self, router: str = "router") -> PkiPaths:
        """The lab PKI with the server certificate of that router's agent."""
        self._spec(router)
        return PkiPaths.in_dir(self.state_dir / "pki",
                               "server" if router == "router" else f"server-{router}")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log(self, what: str) -> Path:
        return self.log_dir / f"{what}.log"

    def lease_file(self, guest: str) -> Path:
        return self.state_dir / "leases" / f"{guest}.lease"

    @property
    def control_ip(self) -> str:
        return self.control_ip_of("router")

    def control_ip_of(self, router: str = "router") -> str:
        if self.control_octet is None:
            raise LabError(f"lab {self.name} has no control subnet yet: run skiff lab up")
        self._spec(router)
        return str(names.control_addresses(self.control_octet, router)[1].ip)

    @property
    def agent_url(self) -> str:
        return self.agent_url_of("router")

    def agent_url_of(self, router: str = "router") -> str:
        return f"https://{self.control_ip_of(router)}:{names.AGENT_PORT}"

    def ns(self, role: str) -> str:
        """Namespace name of a role: switch, internet, a router (router, router2, rb),
        rw or a guest name (g1..., h1...)."""
        fixed = ("switch", "internet", names.ROADWARRIOR, *names.ROUTERS)
        if role not in fixed and role not in self.guests:
            Guest.from_name(role)  # raises for a name that cannot be a guest
        return self.names.ns(role)

    # -- running commands ----------------------------------------------------------------

    def argv_in(self, role: str, argv: Sequence[str]) -> list[str]:
        """argv that runs a command in a lab namespace.

        For the router this enters the agent's own mount namespace too (its private
        /run), when the agent is running.
        """
        ns = self.ns(role)
        if role in names.ROUTERS:
            pid = self.pids.get(names.ROUTERS[role].agent_key)
            if pid and _in_namespace(pid, ns):
                # from the image: its root, its programs (the agent's view of the files)
                root = ["-r", "-w"] if self.image else []
                return ["nsenter", "-t", str(pid), "-m", "-n", *root, "--", *argv]
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

    def agent(self, router: str = "router", timeout: float = 60.0) -> AgentClient:
        """Client of a router's agent (mutual TLS, checks the certificate names its id)."""
        return AgentClient(self.agent_url_of(router), self.router_id_of(router),
                           self.pki_of(router), timeout=timeout)

    def baseline(self, router: str = "router", generation: int = 1) -> RouterDocument:
        """The lab's baseline document for a router (its MACs, addresses, its guests)."""
        if self.control_octet is None:
            raise LabError(f"lab {self.name} has no control subnet yet: run skiff lab up")
        spec = self._spec(router)
        guests = [g for g in self.guests.values() if g.network == spec.network]
        return baseline_document(self.router_id_of(router),
                                 names.control_addresses(self.control_octet, router)[1],
                                 guests, generation, router=router)

    async def put_config(self, document: RouterDocument | dict,
                         router: str = "router") -> Reply:
        """PUT a document (valid or not) and return the agent's reply as is."""
        reply = await self.agent(router).put_config(document)
        if reply.ok and isinstance(document, RouterDocument):
            self.documents[router] = document
            self.save()
        return reply

    async def apply(self, document: RouterDocument, router: str = "router") -> Reply:
        """PUT a document and raise AgentError unless it was applied; remember it."""
        reply = await self.agent(router).apply(document)
        self.documents[router] = document
        self.save()
        return reply

    def derive(self, router: str = "router", **changes: Any) -> RouterDocument:
        """The last document applied to router with fields replaced and the generation
        bumped."""
        if router not in self.documents:
            raise LabError(f"no document applied to {router} yet")
        return derive(self.documents[router], **changes)

    async def start_agent(self, router: str = "router") -> int:
        spec = self._spec(router)
        if self.image:
            argv = await self._image_argv(router)
        else:
            agent_dir = self.state_dir / ("agent" if router == "router" else f"agent-{router}")
            agent_dir.mkdir(parents=True, exist_ok=True)
            pki = self.pki_of(router)
            argv = [
                "unshare", "--mount", "--propagation", "private", "--",
                sys.executable, "-m", "appliances.lab.nsinit", "--tmpfs", "/run", "--",
                *self.agent_cmd,
                "--role", "router", "--id", self.router_id_of(router),
                "--state-dir", str(agent_dir),
                "--listen", self.control_ip_of(router), "--port", str(names.AGENT_PORT),
                "--ca", str(pki.ca_cert), "--cert", str(pki.server_cert),
                "--key", str(pki.server_key),
            ]
        key = spec.agent_key
        # This kernel has no ESP: the agent's strongSwan carries ESP in user space.
        pid = self.spawn_in(router, key, argv, env={IPSEC_DATAPATH_ENV: "libipsec"})
        self.save()
        self.progress(f"{router} agent started (pid {pid}), waiting for "
                      f"{self.agent_url_of(router)}/v1/health")
        try:
            await self.agent(router).wait_healthy(
                AGENT_HEALTH_TIMEOUT, alive=lambda: daemons.exited(pid) is None
                and netns.pid_alive(pid))
        except AgentError as exc:
            raise LabError(f"{exc}; see the agent log {self.log(key)}:\n"
                           f"{daemons.tail(self.log(key))}") from None
        return pid

    async def _image_argv(self, router: str) -> list[str]:
        """The router's boot configuration (from the lab PKI) and the command that runs
        the image's ``skiff boot --run`` with it."""
        from appliances.agent.bootconfig import (
            BOOT_JSON,
            CA_FILE,
            CERT_FILE,
            KEY_FILE,
            BootConfig,
            Control,
            Management,
        )
        from appliances.image import imageroot

        assert self.image is not None and self.control_octet is not None
        host = imageroot.LocalHost()
        try:
            lower, sha = await imageroot.ensure_root(host, self.image)
        except imageroot.ImageRootError as exc:
            raise LabError(str(exc)) from None
        host_ip, control = names.control_addresses(self.control_octet, router)
        config = BootConfig(role="router", appliance_id=self.router_id_of(router),
                            control=Control(device="eth1", address=control),
                            management=Management(address=str(host_ip.ip)),
                            agent_port=names.AGENT_PORT)
        pki = self.pki_of(router)
        files = [(BOOT_JSON, config.model_dump_json(exclude_none=True).encode(), 0o644),
                 (CA_FILE, pki.ca_cert.read_bytes(), 0o644),
                 (CERT_FILE, pki.server_cert.read_bytes(), 0o644),
                 (KEY_FILE, pki.server_key.read_bytes(), 0o600)]
        root = imageroot.ApplianceRoot(str(self.state_dir / f"appliance-{router}"))
        await imageroot.prepare(host, root, sha, files)
        return imageroot.boot_argv(sys.executable, lower, root)

    def agent_state_dir(self, router: str = "router", *, inside: bool = False) -> Path:
        """The agent's state folder (rendered configs, the last good document); with
        ``inside``, as commands run by ``run_in(router, ...)`` see it."""
        if self.image and inside:
            return Path("/var/lib/skiff/agent")
        if self.image:
            return (self.state_dir / f"appliance-{router}" / "root" / "upper" / "var" / "lib"
                    / "skiff" / "agent")
        return self.state_dir / ("agent" if router == "router" else f"agent-{router}")

    async def stop_agent(self, router: str = "router", grace: float = 5.0) -> None:
        pid = self.pids.pop(self._spec(router).agent_key, None)
        if pid:
            await netns.kill_pids(lambda: [pid] if netns.pid_alive(pid) else [], grace)
            daemons.reap()
            self.save()

    # -- up ------------------------------------------------------------------------------

    async def up(self, guests: int = 2, networks: int = 1, redundant: bool = False,
                 roadwarrior: bool = False, *, lease_timeout: float = LEASE_TIMEOUT) -> dict:
        """Build the lab, start the agents, apply the baseline documents, start the guests.

        ``guests`` is per network (g1..gN in network 1, h1..hN in network 2). The
        redundant router rb gets an agent but no document. Leftovers of a lab with the
        same name are removed first.
        """
        check_root()
        check_tools()
        if not 0 <= guests <= names.MAX_GUESTS:
            raise LabError(f"--guests must be between 0 and {names.MAX_GUESTS}")
        if not 1 <= networks <= names.MAX_NETWORKS:
            raise LabError(f"--networks must be between 1 and {names.MAX_NETWORKS}")
        if await self.leftovers():
            self.progress(f"removing leftovers of lab {self.name}")
        await self.down(quiet=True)
        self._make_state_dir()
        self.guests, self.pids, self.documents = {}, {}, {}
        self.networks, self.redundant, self.roadwarrior = networks, redundant, roadwarrior
        n = self.names

        self.progress(f"building namespaces {n.prefix}*")
        await topology.build_switch(n, networks)
        await asyncio.gather(topology.build_internet(n),
                             *(topology.build_router(n, r) for r in self.routers))
        if roadwarrior:
            await topology.build_roadwarrior(n)
        async with topology.allocation_lock():
            self.control_octet = await topology.choose_control_octet(self.name)
            await topology.build_control(n, self.control_octet, self.routers)
        self.save()
        self.progress(f"control network {n.control_bridge}: host 169.254.{self.control_octet}.1, "
                      + ", ".join(f"{r} {self.control_ip_of(r)}" for r in self.routers))
        self._start_internet()

        self.progress("creating the lab PKI")
        await asyncio.to_thread(create_lab_pki, self.state_dir / "pki", self.router_id,
                                self.control_ip)
        for router in self.routers[1:]:
            await asyncio.to_thread(add_server_cert, self.state_dir / "pki",
                                    self.router_id_of(router), self.control_ip_of(router),
                                    f"server-{router}")
        await asyncio.gather(*(self.start_agent(r) for r in self.routers))
        wanted = [Guest(k, net) for net in range(1, networks + 1) for k in range(1, guests + 1)]
        self.guests = {g.name: g for g in wanted}  # baseline() reads them
        for net in range(1, networks + 1):
            router = names.NETWORKS[net].router
            doc = self.baseline(router)
            self.progress(f"applying the baseline document to {router} "
                          f"(generation {doc.generation})")
            try:
                await self.apply(doc, router)
            except AgentError as exc:
                key = names.ROUTERS[router].agent_key
                raise LabError(f"{exc}; see the agent log {self.log(key)}") from None
        self.guests = {}

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
        for key, argv in internet_services(self.state_dir).items():
            self.spawn_in("internet", key, argv)

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

    async def add_guest(self, index: int | None = None, *, network: int = 1, wait: bool = True,
                        timeout: float = LEASE_TIMEOUT) -> Guest:
        """Add guest gK (hK in network 2; next free K by default): DHCP host in the
        network router's document, then the guest."""
        if network not in names.NETWORKS or network > self.networks:
            raise LabError(f"lab {self.name} has no network {network}")
        if index is None:
            index = next(k for k in range(1, names.MAX_GUESTS + 1)
                         if Guest(k, network).name not in self.guests)
        guest = Guest(index, network)
        if guest.name in self.guests:
            raise LabError(f"guest {guest.name} already exists")
        router = names.NETWORKS[network].router
        doc = self.documents.get(router)
        if doc is not None:
            hosts = [h for h in doc.dhcp_hosts if h.mac != guest.mac]
            await self.apply(self.derive(router, dhcp_hosts=[*hosts, dhcp_host(guest)]), router)
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
        router = names.NETWORKS[guest.network].router
        doc = self.documents.get(router)
        if doc is not None:
            hosts = [h for h in doc.dhcp_hosts if h.mac != guest.mac]
            if len(hosts) != len(doc.dhcp_hosts):
                await self.apply(self.derive(router, dhcp_hosts=hosts), router)
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
            "image": self.image,
            "namespaces": {role: n.ns(role) for role in (
                "switch", "internet", *self.routers,
                *((names.ROADWARRIOR,) if self.roadwarrior else ()),
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
            "routers": {r: self._describe_router(r) for r in self.routers},
            "networks": [
                {"index": k, "bridge": names.NETWORKS[k].bridge,
                 "cidr": str(names.NETWORKS[k].cidr), "gateway": str(names.NETWORKS[k].gateway),
                 "router": names.NETWORKS[k].router,
                 "guest_names": f"{names.NETWORKS[k].guest_letter}1..N"}
                for k in range(1, self.networks + 1)
            ],
            "redundant": self.redundant,
            "roadwarrior": {
                "namespace": n.ns(names.ROADWARRIOR),
                "ip": f"{names.ROADWARRIOR_IP}/{names.PUBLIC_CIDR.prefixlen}",
                "default_route": str(names.INTERNET_IP),
                "note": "on the public segment: reaches every router's public IP directly",
            } if self.roadwarrior else None,
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
                {"name": g.name, "network": g.network, "namespace": n.ns(g.name), "mac": g.mac,
                 "ip": str(g.ip), "lease": (self.lease(g.name) or {}).get("ip")}
                for g in sorted(self.guests.values(), key=lambda g: (g.network, g.index))
            ],
            "pids": dict(self.pids),
        }

    def _describe_router(self, router: str) -> dict:
        spec = names.ROUTERS[router]
        net = names.NETWORKS[spec.network]
        up = self.control_octet is not None
        doc = self.documents.get(router)
        return {
            "id": self.router_id_of(router),
            "namespace": self.names.ns(router),
            "network": spec.network,
            "guest_ip": f"{net.gateway}/{net.cidr.prefixlen}",
            "public_ip": f"{spec.public_ip}/{names.PUBLIC_CIDR.prefixlen}",
            "spare_public_ips": [str(ip) for ip in spec.spare_public_ips],
            "macs": dict(spec.macs),
            "control_ip": self.control_ip_of(router) if up else None,
            "agent_url": self.agent_url_of(router) if up else None,
            "agent_log": str(self.log(spec.agent_key)),
            "server_cert": str(self.pki_of(router).server_cert),
            "generation": doc.generation if doc else None,
        }

    def save(self) -> None:
        if not self.state_dir.is_dir():
            return
        data = self.describe()
        data["_state"] = {
            "control_octet": self.control_octet,
            "guests": sorted(self.guests, key=_guest_key),
            "networks": self.networks,
            "redundant": self.redundant,
            "roadwarrior": self.roadwarrior,
            "document": self.document.model_dump(mode="json") if self.document else None,
            "documents": {r: d.model_dump(mode="json") for r, d in self.documents.items()},
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
        guests = [Guest(k) if isinstance(k, int) else Guest.from_name(k)
                  for k in state.get("guests", [])]
        lab.guests = {g.name: g for g in guests}
        lab.networks = int(state.get("networks", 1))
        lab.redundant = bool(state.get("redundant", False))
        lab.roadwarrior = bool(state.get("roadwarrior", False))
        lab.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        lab.agent_cmd = state.get("agent_cmd") or lab.agent_cmd
        lab.image = data.get("image")
        if state.get("document"):
            lab.document = parse_document(state["document"])
        for router, doc in (state.get("documents") or {}).items():
            lab.documents[router] = parse_document(doc)
        return lab

    async def status(self) -> dict:
        """The description plus what is alive now (namespaces, processes, agent health)."""
        desc = self.describe()
        existing = set(await netns.list_namespaces())
        desc["alive"] = {
            "namespaces": {role: ns in existing for role, ns in desc["namespaces"].items()},
            "processes": {key: netns.pid_alive(pid) for key, pid in self.pids.items()},
        }
        health = {}
        for router in self.routers:
            try:
                reply = await self.agent(router, timeout=5).health(timeout=5)
                health[router] = {"status": reply.status, "body": reply.body}
            except Exception as exc:  # noqa: BLE001 - any failure is a status to report
                health[router] = {"error": f"{type(exc).__name__}: {exc}"}
        desc["alive"]["agent_health"] = health["router"]
        desc["alive"]["agents_health"] = health
        return desc


def _remove_if_empty(d: Path) -> bool:
    """An empty folder is ours to remove too (a state dir that never got its marker)."""
    with contextlib.suppress(OSError):
        if not any(d.iterdir()):
            d.rmdir()
            return True
    return False


def _guest_key(name: str) -> tuple[int, int]:
    guest = Guest.from_name(name)
    return guest.network, guest.index


def _in_namespace(pid: int, ns: str) -> bool:
    """True if pid is alive and sits in network namespace ns."""
    try:
        return (os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.NETNS_RUN / ns).st_ino
                and netns.pid_alive(pid))
    except OSError:
        return False
