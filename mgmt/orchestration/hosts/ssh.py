"""The ``ssh`` host driver: a remote Linux host driven over SSH (asyncssh).

The remote host runs the same namespace runtime as the local ``netns`` driver
(mgmt.orchestration.hosts.runtime) through ``SshExecutor`` (hosts/sshexec.py:
argv quoting, host-key pinning, SFTP writes, detached processes). There the
segment bridges, the VXLAN devices and the control bridge ``ctl`` (with the
host's control address, the first of ``control_network``) live in the host's own
network namespace (``bridge_ns=None``); routers and instances are namespaces
``<prefix><name>``. The host's underlay address (HostFacts.underlay_ip, its VXLAN
end) is the address the management server connects to unless given.

The management server reaches a router's agent through an SSH local port forward
from 127.0.0.1 to ``<control_ip>:8443`` on the host; a forward is kept per router
and reused, and made again (on the same local port when it can) after the
connection was lost. The routers' heartbeats go the other way, through one
reverse forward per host from the host's control address (port 8250) to a
heartbeat-only listener on the server's loopback (``heartbeat_url``). For that the
host's sshd needs ``AllowTcpForwarding yes`` and ``GatewayPorts clientspecified``
(else it binds the forward on its loopback, which routers cannot reach, and they
are polled instead of heard).

A host row's URL says how to reach it (``for_host``)::

    ssh://[user@]address[:port][/?keyfile=..&statedir=..&prefix=..&lab=..&hostkey=..]

with the private key ``keyfile`` when the URL names one, else the password of the
row, else the key $SKIFF_SSH_KEY (so a client that must send a password, as
Ansible's cs_host does, still logs in with the key the URL names). The host key is
pinned at addHost: ``hostkey=<type> <base64>`` (URL-encoded) is the key to pin,
read beforehand over a connection the operator trusts (the skiff_host role reads
it over Ansible's), and addHost refuses a host presenting another one; without it
addHost pins the key the host presents on first use. ``lab=<name>`` marks a lab
remote host (appliances.lab.remote_hosts): its processes carry SKIFF_LAB=<name>
and run this checkout's Python, as the lab's hosts share this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncssh

from appliances.common.heartbeat import PATH as HEARTBEAT_PATH
from appliances.lab.names import check_name
from mgmt.orchestration.hosts.driver import (
    HEARTBEAT_PORT,
    AgentEndpoint,
    HeartbeatSink,
    HostDriver,
    HostError,
    HostFacts,
    HostHealth,
    InstancePlan,
    RouterPlan,
)
from mgmt.orchestration.hosts.runtime import AGENT_PORT, NamespaceRuntime
from mgmt.orchestration.hosts.sshexec import (
    SshExecutor,
    command_line,
    fetch_host_key,
    fingerprint,
    host_key_text,
    parse_host_key,
)

__all__ = [
    "SshExecutor",
    "SshHostDriver",
    "command_line",
    "fetch_host_key",
    "fingerprint",
    "host_key_text",
    "parse_host_key",
]

PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
REQUIRED_TOOLS = ("ip", "bridge", "unshare", "busybox", "dnsmasq", "nft")
DEFAULT_STATE_DIR = "/var/lib/skiff/host"
KEY_ENV = "SKIFF_SSH_KEY"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
URL_OPTIONS = ("keyfile", "statedir", "prefix", "lab", "underlay", "control", "hostkey")


@dataclass(frozen=True)
class SshUrl:
    address: str
    port: int
    username: str | None
    options: dict[str, str]


def parse_ssh_url(url: str) -> SshUrl:
    """ssh://[user@]address[:port][/?option=value&...] (options: URL_OPTIONS)."""
    parts = urlsplit(url)
    if parts.scheme != "ssh":
        raise ValueError(f"{url[:80]!r} is not an ssh:// URL")
    try:
        address, port = parts.hostname, parts.port or 22
    except ValueError as exc:
        raise ValueError(f"bad ssh URL {url[:80]!r}: {exc}") from None
    if not address:
        raise ValueError(f"ssh URL {url[:80]!r} names no host")
    if parts.password is not None:
        raise ValueError("a password goes in the host's password, not in its URL")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"ssh URL {url[:80]!r} has a path; options go after '?'")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(URL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown ssh URL options {', '.join(unknown)} (known: {', '.join(URL_OPTIONS)})"
        )
    if any(len(v) != 1 or not v[0] for v in query.values()):
        raise ValueError("each ssh URL option is given once, with a value")
    return SshUrl(address, port, parts.username, {k: v[0] for k, v in query.items()})


#: Prints the names of the tools (positional arguments) the host lacks.
MISSING_TOOLS = 'for t do command -v "$t" >/dev/null 2>&1 || echo "$t"; done'


@dataclass
class _Forward:
    conn: asyncssh.SSHClientConnection
    control_ip: str
    listener: asyncssh.SSHListener
    port: int


class SshHostDriver(HostDriver):
    """A remote Linux host: NamespaceRuntime over SshExecutor, bridges in the host's own
    namespace, agents reached through SSH port forwards."""

    def __init__(
        self,
        executor: SshExecutor,
        *,
        prefix: str = "skf-",
        state_dir: str = DEFAULT_STATE_DIR,
        control_network: str = "169.254.0.0/24",
        underlay_ip: str | None = None,
    ):
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"bad namespace prefix {prefix!r}")
        if not state_dir.startswith("/"):
            raise ValueError(f"state dir {state_dir!r} is not absolute")
        self.x = executor
        self.state_dir = state_dir.rstrip("/")
        self.runtime = NamespaceRuntime(
            executor,
            prefix=prefix,
            bridge_ns=None,
            state_dir=self.state_dir,
            python=executor.python,
        )
        self.control_network = ipaddress.IPv4Network(control_network)
        self.underlay_ip = str(ipaddress.IPv4Address(underlay_ip)) if underlay_ip else None
        self._prepared = asyncio.Lock()
        self._ready = False
        self._forwards: dict[str, _Forward] = {}
        self._forward_lock = asyncio.Lock()
        self._heartbeat: _Forward | None = None

    @classmethod
    def for_host(cls, host: Any) -> SshHostDriver:
        """The driver for a host row: its url (see the module's docstring), username,
        password (else a key file) and pinned host_key."""
        name = getattr(host, "name", None) or host.url
        try:
            url = parse_ssh_url(host.url)
            opts = url.options
            if not host.host_key:
                raise ValueError("no SSH host key was pinned when it was added; add it again")
            keyfile = opts.get("keyfile") or (None if host.password else os.environ.get(KEY_ENV))
            password = None if keyfile else host.password
            if not password and not keyfile:
                raise ValueError(
                    f"needs a password or a private key (keyfile= in its URL, or ${KEY_ENV})"
                )
            lab = opts.get("lab")
            extra: dict[str, Any] = {}
            prefix = opts.get("prefix", "skf-")
            if lab is not None:
                check_name(lab)
                if not prefix.startswith(f"skf-{lab}-"):
                    raise ValueError(
                        f"a lab host's prefix starts with skf-{lab}- "
                        "(so the lab's down removes what it builds)"
                    )
                extra = {
                    "mark": lab,
                    "python": sys.executable,
                    "env": {"PYTHONPATH": str(PROJECT_ROOT)},
                }
            executor = SshExecutor(
                url.address,
                port=url.port,
                username=host.username or url.username or "root",
                host_key=host.host_key,
                password=password or None,
                key_path=keyfile,
                **extra,
            )
            return cls(
                executor,
                prefix=prefix,
                state_dir=opts.get("statedir", DEFAULT_STATE_DIR),
                control_network=opts.get("control", "169.254.0.0/24"),
                underlay_ip=opts.get("underlay"),
            )
        except ValueError as exc:
            raise HostError(f"host {name}: {exc}") from None

    @property
    def where(self) -> str:
        return self.x.where

    @property
    def _host_ip(self) -> ipaddress.IPv4Interface:
        net = self.control_network
        return ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")

    # -- prepare ------------------------------------------------------------------------

    async def prepare(self) -> HostFacts:
        async with self._prepared:
            x = self.x
            if (await x.run(["id", "-u"])).stdout.strip() != "0":
                raise HostError(f"{self.where}: the user must be root to build namespaces")
            res = await x.run(["sh", "-c", MISSING_TOOLS, "sh", *REQUIRED_TOOLS, x.python])
            missing = res.stdout.split()
            if missing:
                raise HostError(f"{self.where}: missing tools {', '.join(missing)}")
            await x.run(["mkdir", "-p", f"{self.state_dir}/logs"])
            await x.run(["chmod", "0755", self.state_dir])
            await self.runtime.ensure_control(self._host_ip)
            if self.underlay_ip is None:
                conn = await x.connection()
                self.underlay_ip = str(conn.get_extra_info("peername")[0])
            self._ready = True
            return await self._facts()

    async def _facts(self) -> HostFacts:
        run = self.x.run
        hostname = (await run(["hostname"])).stdout.strip()
        cpus = int((await run(["nproc"])).stdout.strip() or 1)
        meminfo = (await run(["cat", "/proc/meminfo"])).stdout
        m = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
        cpuinfo = (await run(["cat", "/proc/cpuinfo"], check=False)).stdout
        mhz = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.M)
        kernel = (await run(["uname", "-r"])).stdout.strip()
        return HostFacts(
            hostname=hostname,
            cpus=cpus,
            cpu_speed_mhz=int(float(mhz.group(1))) if mhz else 2000,
            memory_bytes=int(m.group(1)) * 1024 if m else 0,
            hypervisor_version=f"netns-ssh linux {kernel}",
            underlay_ip=self.underlay_ip,
        )

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self.prepare()

    # -- the interface ------------------------------------------------------------------

    async def health(self) -> HostHealth:
        try:
            links = await self.runtime.links(None)
        except HostError as exc:
            return HostHealth(False, str(exc))
        if "ctl" not in links:
            return HostHealth(False, f"{self.where}: the control bridge ctl is gone")
        return HostHealth(True)

    async def plug_segment(self, vni: int, peers: tuple[str, ...] = (), mtu: int = 1500) -> None:
        await self._ensure_ready()
        await self.runtime.plug_segment(vni, peers, mtu, underlay_ip=self.underlay_ip)

    async def unplug_segment(self, vni: int) -> None:
        await self.runtime.unplug_segment(vni)

    async def start_router(self, plan: RouterPlan) -> AgentEndpoint:
        await self._ensure_ready()
        if plan.control_ip.ip not in self.control_network:
            raise HostError(
                f"router {plan.name}: control address {plan.control_ip} is not in "
                f"{self.where}'s control network {self.control_network}"
            )
        await self.runtime.start_router(plan)
        return await self.agent_endpoint(plan.name, str(plan.control_ip.ip))

    async def start_instance(self, plan: InstancePlan) -> None:
        await self._ensure_ready()
        await self.runtime.start_instance(plan)

    async def stop(self, name: str) -> None:
        await self.runtime.stop(name)

    async def destroy(self, name: str) -> None:
        await self.runtime.destroy(name)
        await self._close_forward(name)

    async def running(self) -> set[str]:
        return await self.runtime.running()

    async def lease(self, name: str) -> dict[str, str]:
        return await self.runtime.lease(name)

    async def agent_endpoint(self, name: str, control_ip: str) -> AgentEndpoint:
        """A local port forwarded over the SSH connection to control_ip:8443."""
        target = str(ipaddress.IPv4Address(control_ip))
        async with self._forward_lock:
            conn = await self.x.connection()
            old = self._forwards.get(name)
            if old and old.conn is conn and old.control_ip == target:
                return AgentEndpoint("127.0.0.1", old.port)
            if old:
                old.listener.close()
            listener = None
            if old:  # keep the port the orchestrator may have cached
                with contextlib.suppress(OSError, asyncssh.Error):
                    listener = await conn.forward_local_port(
                        "127.0.0.1", old.port, target, AGENT_PORT
                    )
            if listener is None:
                try:
                    listener = await conn.forward_local_port("127.0.0.1", 0, target, AGENT_PORT)
                except (OSError, asyncssh.Error) as exc:
                    raise HostError(
                        f"{self.where}: cannot forward a port to {target}:{AGENT_PORT}: {exc}"
                    ) from None
            fwd = _Forward(conn, target, listener, listener.get_port())
            self._forwards[name] = fwd
            return AgentEndpoint("127.0.0.1", fwd.port)

    async def heartbeat_url(self, sink: HeartbeatSink) -> str | None:
        """A reverse forward over the host's SSH connection: the host's control address
        (which its routers reach from their control NICs), port 8250 or the port used
        before, to a heartbeat-only listener on this server's loopback. Made again
        after the connection was lost; the agents keep their URL, so the same port is
        asked for first."""
        address = str(self._host_ip.ip)
        async with self._forward_lock:
            conn = await self.x.connection()
            old = self._heartbeat
            if old and old.conn is conn:
                return f"http://{address}:{old.port}{HEARTBEAT_PATH}"
            if old:
                old.listener.close()
                self._heartbeat = None
            local = await sink.bind("127.0.0.1", 0)
            listener, error = None, None
            for port in (old.port if old else HEARTBEAT_PORT, 0):
                try:
                    listener = await conn.forward_remote_port(address, port, "127.0.0.1",
                                                              local)
                    break
                except (OSError, asyncssh.Error) as exc:
                    error = exc
            if listener is None:
                raise HostError(f"{self.where}: cannot forward {address} back for "
                                f"heartbeats: {error} (the host's sshd needs "
                                "AllowTcpForwarding yes, GatewayPorts clientspecified)")
            self._heartbeat = _Forward(conn, address, listener, listener.get_port())
            return f"http://{address}:{self._heartbeat.port}{HEARTBEAT_PATH}"

    async def _close_forward(self, name: str) -> None:
        async with self._forward_lock:
            fwd = self._forwards.pop(name, None)
            if fwd:
                fwd.listener.close()

    async def close(self) -> None:
        async with self._forward_lock:
            for fwd in self._forwards.values():
                fwd.listener.close()
            self._forwards.clear()
            if self._heartbeat:
                self._heartbeat.listener.close()
                self._heartbeat = None
        await self.x.close()
