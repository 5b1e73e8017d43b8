"""The host-driver interface: what the management server asks of a hypervisor host.

A driver prepares a host, plugs guest segments into it, starts, stops and
destroys routers and instances, and reports capacity and health. Drivers know
nothing of the database: the orchestrator decides names, MACs, addresses and
certificates and hands the driver a complete plan.

Segments. Every guest network is a layer-2 segment with a VXLAN id (VNI); the
zone's public network is the segment ``PUBLIC_VNI``. A host bridges the
segments its routers and instances use; a segment that spans hosts is carried
by VXLAN between the hosts' underlay addresses (``peers``).

Three drivers exist: ``netns`` (the lab's namespace runtime on the management
server's own machine, mgmt.orchestration.hosts.netns), ``ssh`` (a remote
Linux host driven over SSH, mgmt.orchestration.hosts.ssh) and ``qemu`` (the
netns fabric with routers as VMs booted from the system-VM image,
mgmt.orchestration.hosts.qemu): a plan names NICs by device, MAC and segment,
and carries the appliance's certificates as PEM text that a config drive holds.

Heartbeats. A router's agent POSTs signed heartbeats to the URL in its plan
(``RouterPlan.heartbeat_url``). The driver decides that URL
(``heartbeat_url``): one the router reaches from its control NIC, ending at a
heartbeat-only listener of the management server (``HeartbeatSink``). The netns
driver listens on its host's control address itself; the ssh driver forwards the
remote host's control address back over its SSH connection; the qemu driver's
VMs reach the netns listener through the control bridge (the URL travels in
their boot configuration). A driver that returns
None starts agents without heartbeats: they are polled, as before.
"""

from __future__ import annotations

import abc
import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Protocol

#: The zone's public segment; guest networks get VNIs from GUEST_VNIS.
PUBLIC_VNI = 1
GUEST_VNIS = range(1000, 16_000_000)

SegmentRole = Literal["guest", "public", "control"]

#: The port a host's control address takes heartbeats on (CloudStack's agent port),
#: unless another server already holds it there.
HEARTBEAT_PORT = 8250


class HostError(RuntimeError):
    """A host operation failed; the message names the host and what to do."""


@dataclass(frozen=True)
class NicPlan:
    """One NIC: the device inside the guest, its MAC and the segment it sits on.

    ``vni`` is the segment for role guest or public; a control NIC sits on the
    host's own link-local control network and has no VNI.
    """

    device: str
    mac: str
    role: SegmentRole
    vni: int | None = None
    #: A static address (CIDR) the host puts on the NIC, for appliances whose role does
    #: not configure its own interfaces (the console proxy's and the storage VM's
    #: public NIC); None: the appliance or its DHCP client does.
    address: str | None = None


@dataclass(frozen=True)
class ApplianceCerts:
    """PEM text of the CA the agent trusts and the agent's own certificate and key."""

    ca: str
    cert: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class RouterPlan:
    """A virtual router: ``name`` is its appliance id (the name its certificate carries).

    ``control_ip`` is an address in the host's ``control_network`` on the control NIC.
    ``heartbeat_url`` (from ``HostDriver.heartbeat_url``): where the agent sends its
    signed heartbeats every ``heartbeat_interval`` seconds; None: it sends none.
    ``image`` (the zone's ``system.vm.image``): the system-VM root file system archive
    the namespace runtime starts the router from (the image's own Python and daemons);
    None: the host's own environment. The qemu driver boots the qcow2 its URL names.
    """

    name: str
    nics: tuple[NicPlan, ...]
    control_ip: ipaddress.IPv4Interface
    certs: ApplianceCerts
    cpu_number: int = 1
    memory_mib: int = 256
    heartbeat_url: str | None = None
    heartbeat_interval: float = 0.0
    image: str | None = None
    #: The agent's role (``skiff agent --role``): the same plan starts a system VM,
    #: ``storage`` or ``console``, whose NICs carry their static ``address``.
    role: str = "router"
    #: The default route of an appliance whose role does not set one (system VMs).
    gateway: str | None = None


@dataclass(frozen=True)
class VncPlan:
    """An instance's console: a VNC server on the host, listening on ``address`` (the
    host's control address, which the console proxy reaches) and ``port``."""

    address: str
    port: int
    password: str = field(repr=False)


@dataclass(frozen=True)
class InstancePlan:
    """A user instance. In the lab: a namespace with an HTTP service and a DHCP client,
    and with ``vnc`` a display (Xvfb) served by x11vnc on the host."""

    name: str
    hostname: str
    nics: tuple[NicPlan, ...]
    cpu_number: int = 1
    memory_mib: int = 256
    vnc: VncPlan | None = None


@dataclass(frozen=True)
class HostFacts:
    """What prepare() learns about a host."""

    hostname: str
    cpus: int
    cpu_speed_mhz: int
    memory_bytes: int
    hypervisor_version: str = ""
    #: The host's address for VXLAN between hosts.
    underlay_ip: str | None = None


@dataclass(frozen=True)
class HostHealth:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class AgentEndpoint:
    """Where the management server opens its mutual-TLS connection to an agent
    (a tunnel's local end for a remote host)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


class HeartbeatSink(Protocol):
    """The management server's heartbeat-only listeners (mgmt.server.heartbeat)."""

    async def bind(self, address: str, port: int) -> int:
        """Serve heartbeats on address:port (0, or a port taken: any free one) and
        return the port; the same address again returns the same listener's port."""
        ...


class HostDriver(abc.ABC):
    """One hypervisor host. Every method is idempotent: asking for what already is
    changes nothing, so the orchestrator may retry after any failure."""

    #: The link-local network the host reaches its routers' control NICs on; the
    #: host itself holds the first address.
    control_network: ipaddress.IPv4Network

    @abc.abstractmethod
    async def prepare(self) -> HostFacts:
        """Make the host ready (bridges, control network) and return its facts."""

    @abc.abstractmethod
    async def health(self) -> HostHealth:
        """Whether the host answers and can run appliances now."""

    @abc.abstractmethod
    async def plug_segment(self, vni: int, peers: tuple[str, ...] = (), mtu: int = 1500) -> None:
        """Create the segment's bridge; ``peers`` are the underlay IPs of the other hosts
        that carry it (VXLAN). Calling again with other peers updates the VXLAN fan-out."""

    @abc.abstractmethod
    async def unplug_segment(self, vni: int) -> None:
        """Remove the segment's bridge (and VXLAN) once nothing on the host uses it."""

    @abc.abstractmethod
    async def start_router(self, plan: RouterPlan) -> AgentEndpoint:
        """Start the router and its agent; returns once the agent's port is open."""

    @abc.abstractmethod
    async def start_instance(self, plan: InstancePlan) -> None:
        """Start the instance (its DHCP client asks the network's router for an address)."""

    @abc.abstractmethod
    async def stop(self, name: str) -> None:
        """Stop a router or instance; its disks (state) stay. Stopping what is not
        running is not an error."""

    @abc.abstractmethod
    async def destroy(self, name: str) -> None:
        """Stop it and remove everything it had on the host."""

    @abc.abstractmethod
    async def running(self) -> set[str]:
        """Names of the routers and instances running on the host now."""

    @abc.abstractmethod
    async def agent_endpoint(self, name: str, control_ip: str) -> AgentEndpoint:
        """Where the management server reaches the named router's agent, whose control
        address on this host is control_ip (directly, or a tunnel's local end)."""

    @property
    def control_address(self) -> str:
        """The host's own address on its control network (the first one): where the
        host's services for appliances listen (heartbeats, instances' VNC displays)."""
        return str(self.control_network.network_address + 1)

    def image_store(self, zone: str) -> str:
        """The directory a secondary storage VM on this host keeps zone's images in (an
        NFS mount in production; a directory of the host in the lab)."""
        return f"/var/lib/skiff/image-store/{zone}"

    async def heartbeat_url(self, sink: HeartbeatSink) -> str | None:
        """The URL routers on this host send heartbeats to, made reachable now (a
        listener, a forward); idempotent, called again on every reconcile pass so a
        restarted server or a lost connection gets it back. None: no heartbeats."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (SSH sessions, tunnels)."""
