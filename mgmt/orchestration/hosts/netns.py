"""The ``netns`` host driver: routers and instances as namespaces on this machine.

A host ``netns://<lab>`` is a zone fabric named like a lab (``skf-<lab>-``
prefix, so ``skiff lab down --name <lab>`` removes all of it and
``skiff lab exec --name <lab> internet -- ...`` runs commands in it):

- ``skf-<lab>-switch`` holds the segment bridges (``s1`` is the public segment)
  and the control bridge ``ctl``;
- ``skf-<lab>-internet`` is the lab's Internet on the public segment
  (203.0.113.1, an HTTP and a DNS server, the remote-client addresses);
- bridge ``underlay`` there, 198.18.<N>.1/24 with MTU 1550, is the host's underlay
  (its VXLAN address, ``HostFacts.underlay_ip``): segments that span hosts are VXLAN
  between it and the other hosts' underlay addresses; lab remote hosts
  (appliances.lab.remote_hosts) plug into it. The 1550 MTU carries full 1500-byte
  guest frames inside VXLAN, so segments keep MTU 1500;
- the root-namespace veth ``skf-<lab>-ctl`` holds the host's control address
  169.254.<N>.1/24 and leads to ``ctl``: the management server reaches every
  router's agent through it, as a CloudStack host reaches its routers over
  link-local; nothing else of the lab is in the root namespace. The routers'
  heartbeats come back the same way: the management server listens on
  169.254.<N>.1 itself (``heartbeat_url``);
- routers ``skf-<lab>-r-<id>-VM`` and instances ``skf-<lab>-i-<a>-<id>-VM``.

The fabric's state (the control subnet) is in ``<state_dir>/fabric.json`` so a
restarted management server finds the same fabric.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import weakref
from pathlib import Path

from appliances.common.heartbeat import PATH as HEARTBEAT_PATH
from appliances.lab import names, topology
from appliances.lab.lab import MARKER, default_state_dir, internet_services
from mgmt.orchestration.hosts.driver import (
    HEARTBEAT_PORT,
    PUBLIC_VNI,
    AgentEndpoint,
    HeartbeatSink,
    HostDriver,
    HostError,
    HostFacts,
    HostHealth,
    InstancePlan,
    NicPlan,
    RouterPlan,
)
from mgmt.orchestration.hosts.executor import LocalExecutor
from mgmt.orchestration.hosts.runtime import AGENT_PORT, CONTROL_BRIDGE, NamespaceRuntime

REQUIRED_TOOLS = ("ip", "bridge", "unshare", "busybox", "dnsmasq", "nft")
FABRIC_FILE = "fabric.json"
CONTROL_UPLINK = "ctl-up"

#: One prepare at a time per fabric in this process, whichever driver object asks: a
#: server's system VM pass and a test's own driver of the same lab prepared it at once,
#: and both created bridge s1 ("File exists").
_fabric_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def _fabric_lock(lab: str) -> asyncio.Lock:
    per_loop = _fabric_locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(lab, asyncio.Lock())


class NetnsHostDriver(HostDriver):
    def __init__(self, lab: str, state_dir: str | Path | None = None):
        self.names = names.LabNames(names.check_name(lab))
        self.lab = lab
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(lab)
        self.x = LocalExecutor(lab)
        self.runtime = NamespaceRuntime(self.x, prefix=self.names.prefix,
                                        bridge_ns=self.names.switch,
                                        state_dir=str(self.state_dir))
        self.control_network = ipaddress.IPv4Network("169.254.0.0/24")  # set by prepare
        self._ready = False
        self._load()

    @property
    def switch(self) -> str:
        return self.names.switch

    @property
    def root_link(self) -> str:
        return f"{self.names.prefix}ctl"

    def _load(self) -> None:
        try:
            data = json.loads((self.state_dir / FABRIC_FILE).read_text())
            self.control_network = ipaddress.IPv4Network(data["control_network"])
        except (OSError, ValueError, KeyError):
            pass

    def _save(self) -> None:
        (self.state_dir / FABRIC_FILE).write_text(
            json.dumps({"control_network": str(self.control_network)}) + "\n")

    # -- prepare ------------------------------------------------------------------------

    async def prepare(self) -> HostFacts:
        async with _fabric_lock(self.lab):
            if os.geteuid() != 0:
                raise HostError(f"netns host {self.lab}: the management server must run as "
                                "root to build namespaces")
            missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
            if missing:
                raise HostError(f"netns host {self.lab}: missing tools {', '.join(missing)} "
                                "(make deps installs them)")
            self._state_dir()
            self._load()  # another driver object may have built the fabric since __init__
            await self._fabric()
            self._ready = True
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return HostFacts(hostname=self.lab, cpus=os.cpu_count() or 1, cpu_speed_mhz=2000,
                         memory_bytes=memory, hypervisor_version="netns",
                         underlay_ip=str(self.underlay_ip.ip))

    def _state_dir(self) -> None:
        d = self.state_dir.resolve()
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)  # dnsmasq drops to nobody and reads its files in the agents' folders
        (d / MARKER).write_text(self.lab + "\n")

    async def _fabric(self) -> None:
        rt = self.runtime
        await rt.ensure_namespace(self.switch)
        await rt.plug_segment(PUBLIC_VNI)
        await self._control()
        await self._underlay()
        await self._internet()

    async def _control(self) -> None:
        rt = self.runtime
        await rt.ensure_control(self._host_ip)
        if self.root_link in await rt.links(None):
            return
        async with topology.allocation_lock():
            if not (self.state_dir / FABRIC_FILE).exists():
                octet = await topology.choose_control_octet(self.lab)
                self.control_network = ipaddress.IPv4Network(f"169.254.{octet}.0/24")
                self._save()
            await rt.ip(None, "link", "add", self.root_link, "type", "veth", "peer", "name",
                        CONTROL_UPLINK, "netns", self.switch)
            await rt.ip(None, "address", "add", str(self._host_ip), "dev", self.root_link)
            await rt.ip(None, "link", "set", self.root_link, "up")
        await rt.ip(self.switch, "link", "set", CONTROL_UPLINK, "master", CONTROL_BRIDGE, "up")

    @property
    def _host_ip(self) -> ipaddress.IPv4Interface:
        net = self.control_network
        return ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")

    @property
    def underlay_ip(self) -> ipaddress.IPv4Interface:
        """The switch namespace's underlay address (198.18.<control octet>.1/24)."""
        net = names.underlay_network(self.control_network.network_address.packed[2])
        return ipaddress.IPv4Interface(f"{net.network_address + names.UNDERLAY_LOCAL_HOST}"
                                       f"/{net.prefixlen}")

    async def _underlay(self) -> None:
        rt = self.runtime
        await rt.ensure_bridge(names.UNDERLAY_BRIDGE, names.UNDERLAY_MTU)
        await rt.ip(self.switch, "address", "replace", str(self.underlay_ip), "dev",
                    names.UNDERLAY_BRIDGE)

    async def _internet(self) -> None:
        rt = self.runtime
        ns = self.names.internet
        fresh = ns not in await rt.namespaces()
        await rt.ensure_namespace(ns)
        await rt.plug(ns, NicPlan("eth0", names.INTERNET_MAC, "public", PUBLIC_VNI),
                      f"s{PUBLIC_VNI}", "internet")
        if not fresh:
            return
        await rt.ip(ns, "address", "replace",
                    f"{names.INTERNET_IP}/{names.PUBLIC_CIDR.prefixlen}", "dev", "eth0")
        for ip in names.REMOTE_CLIENT_IPS:
            await rt.ip(ns, "address", "replace", f"{ip}/32", "dev", "lo")
        for key, argv in internet_services(self.state_dir).items():
            await self.x.spawn(["ip", "netns", "exec", ns, *argv],
                               log=str(self.state_dir / "logs" / f"{key}.log"))

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self.prepare()

    # -- the interface ------------------------------------------------------------------

    async def health(self) -> HostHealth:
        if self.switch not in await self.runtime.namespaces():
            return HostHealth(False, f"the fabric namespace {self.switch} is gone")
        return HostHealth(True)

    async def plug_segment(self, vni: int, peers: tuple[str, ...] = (), mtu: int = 1500) -> None:
        await self._ensure_ready()
        await self.runtime.plug_segment(vni, peers, mtu, underlay_ip=str(self.underlay_ip.ip))

    async def unplug_segment(self, vni: int) -> None:
        if vni != PUBLIC_VNI:
            await self.runtime.unplug_segment(vni)

    async def start_router(self, plan: RouterPlan) -> AgentEndpoint:
        await self._ensure_ready()
        if plan.control_ip.ip not in self.control_network:
            raise HostError(f"router {plan.name}: control address {plan.control_ip} is not in "
                            f"host {self.lab}'s control network {self.control_network}")
        await self.runtime.start_router(plan)
        return AgentEndpoint(str(plan.control_ip.ip), AGENT_PORT)

    async def start_instance(self, plan: InstancePlan) -> None:
        await self._ensure_ready()
        await self.runtime.start_instance(plan)

    async def stop(self, name: str) -> None:
        await self.runtime.stop(name)

    async def destroy(self, name: str) -> None:
        await self.runtime.destroy(name)

    async def running(self) -> set[str]:
        return await self.runtime.running()

    async def agent_endpoint(self, name: str, control_ip: str) -> AgentEndpoint:
        return AgentEndpoint(control_ip, AGENT_PORT)

    async def lease(self, name: str) -> dict[str, str]:
        return await self.runtime.lease(name)

    def image_store(self, zone: str) -> str:
        """Under the fabric's state dir, so ``skiff lab down`` removes it with the rest."""
        return str(self.state_dir.resolve() / "image-store" / zone)

    async def heartbeat_url(self, sink: HeartbeatSink) -> str | None:
        """A heartbeat-only listener on the host's control address: the root namespace
        holds it (on skf-<lab>-ctl), so the routers on the control bridge reach this
        server directly, with no forward and without reaching its API. None while the
        fabric has no control address (not prepared yet, or removed)."""
        if not (self.state_dir / FABRIC_FILE).exists():
            return None  # the control network is not chosen yet
        address = str(self._host_ip.ip)
        try:
            port = await sink.bind(address, HEARTBEAT_PORT)
        except OSError:
            return None
        return f"http://{address}:{port}{HEARTBEAT_PATH}"

    async def close(self) -> None:
        await self.x.close()
