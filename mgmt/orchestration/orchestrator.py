"""The orchestrator: host drivers, the appliance CA, the key of sealed secrets, agent
clients and router locks.

One per management server (``server.orchestrator``); the life-cycle modules
(networks, routers, instances, sync) take it as their first argument.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from appliances.lab.agentclient import AgentClient
from mgmt.db.engine import Database
from mgmt.db.models import Event
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.sealing import NoKey, Sealer, load_sealer
from mgmt.db.settings import get_setting
from mgmt.orchestration.fingerprints import Fingerprints
from mgmt.orchestration.hosts.driver import HeartbeatSink, HostDriver, HostError, HostFacts
from mgmt.orchestration.locks import RouterLocks
from mgmt.orchestration.pki import ApplianceCA

log = logging.getLogger("skiff.orchestration")

#: How long a router has to answer one document (a first apply starts every daemon).
PUSH_TIMEOUT = 120.0


def make_driver(host: Host) -> HostDriver:
    """The driver for a host row, from its URL: netns://<lab>, qemu://<lab>?image=<qcow2>
    or ssh://[user@]host[:port]."""
    parts = urlsplit(host.url if "://" in host.url else f"netns://{host.url}")
    if parts.scheme == "qemu":
        from mgmt.orchestration.hosts.qemu import QemuHostDriver

        return QemuHostDriver.from_url(host.url)
    if parts.scheme == "netns" or host.hypervisor == "Netns":
        from mgmt.orchestration.hosts.netns import NetnsHostDriver

        return NetnsHostDriver(parts.hostname or host.name)
    if parts.scheme == "ssh":
        try:
            from mgmt.orchestration.hosts.ssh import SshHostDriver  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - until the SSH driver lands
            raise HostError(f"host {host.name}: SSH hosts are not supported here ({exc})") from exc
        return SshHostDriver.for_host(host)  # type: ignore[no-any-return]
    raise HostError(f"host {host.name}: no driver for URL {host.url!r} "
                    "(use netns://<lab name>, qemu://<lab name>?image=... or ssh://<address>)")


class Orchestrator:
    def __init__(self, db: Database, home: Path, owner: str, events: Any = None):
        self.db = db
        self.home = home
        self.owner = owner
        self.events = events
        self.locks = RouterLocks(db, owner)
        self.ca: ApplianceCA | None = None
        #: Keys the document hashes rows keep; replaced by the CA's at start.
        self.fingerprints = Fingerprints(b"")
        #: Seals VPN secrets in the database and opens them for router documents.
        self.sealer: Sealer | NoKey = NoKey()
        self._ssl: ssl.SSLContext | None = None
        self._drivers: dict[int, HostDriver] = {}
        self._facts: dict[int, HostFacts] = {}
        self._host_locks: dict[int, asyncio.Lock] = {}
        self.background: set[asyncio.Task] = set()
        #: The server's heartbeat listeners (mgmt.server.heartbeat); None: agents are
        #: started without heartbeats (an orchestrator without a server, in tests).
        self.heartbeats: HeartbeatSink | None = None

    async def start(self, reconcile: bool = True) -> None:
        self.ca = await ApplianceCA.load(self.db, self.home)
        self.sealer = await load_sealer(self.db)
        self._ssl = self.ca.client_context()
        self.fingerprints = Fingerprints(self.ca.fingerprint_secret())
        from mgmt.orchestration.reconcile import Reconciler

        self.reconciler = Reconciler(self)
        from mgmt.orchestration.image_status import ImagePoller

        self.image_poller = ImagePoller(self)
        if reconcile:
            self.reconciler.start()
            self.image_poller.start()

    async def close(self) -> None:
        tasks = list(self.background)
        for task in tasks:
            task.cancel()
        # Let them unwind (a pass may be inside a database session) before the server
        # closes the database under them: a session cut off there never finishes.
        await asyncio.gather(*tasks, return_exceptions=True)
        for driver in self._drivers.values():
            try:
                await driver.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("closing a host driver failed")

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- hosts ----------------------------------------------------------------------------

    def driver(self, host: Host) -> HostDriver:
        driver = self._drivers.get(host.id)
        if driver is None:
            driver = self._drivers[host.id] = make_driver(host)
        return driver

    def driven_hosts(self) -> set[int]:
        """Ids of the hosts this server has a driver for (it has used them)."""
        return set(self._drivers)

    def host_lock(self, host_id: int) -> asyncio.Lock:
        """Serialises choices that a host's own state decides (its control addresses)."""
        return self._host_locks.setdefault(host_id, asyncio.Lock())

    async def facts(self, host: Host) -> HostFacts:
        if host.id not in self._facts:
            self._facts[host.id] = await self.driver(host).prepare()
        return self._facts[host.id]

    async def segment_hosts(self, network_id: int) -> list[Host]:
        """Hosts that run a router or instance with a NIC on the network."""
        async with self.db.sessions() as session:
            rows = await session.scalars(
                select(Host).where(Host.id.in_(
                    select(VmInstance.host_id).join(Nic, Nic.vm_id == VmInstance.id)
                    .where(Nic.network_id == network_id, Nic.live(), VmInstance.live(),
                           VmInstance.host_id.is_not(None)))).order_by(Host.id))
            return list(rows.all())

    async def peers(self, network_id: int, host_id: int) -> tuple[str, ...]:
        """Underlay addresses of the other hosts that carry the network's segment."""
        out = []
        for host in await self.segment_hosts(network_id):
            if host.id != host_id:
                facts = await self.facts(host)
                if facts.underlay_ip:
                    out.append(facts.underlay_ip)
        return tuple(sorted(out))

    async def wire_segment(self, network_id: int, vni: int) -> None:
        """Give every host of the segment the current list of VXLAN peers."""
        for host in await self.segment_hosts(network_id):
            await self.driver(host).plug_segment(vni, await self.peers(network_id, host.id))

    async def heartbeat(self, host: Host) -> tuple[str | None, float]:
        """The heartbeat URL and interval for routers on host, made reachable now;
        (None, 0) when there are none (no listeners, the setting is 0, the driver
        cannot). Never raises: without heartbeats routers are polled."""
        if self.heartbeats is None:
            return None, 0.0
        async with self.db.sessions() as session:
            interval = float(await get_setting(session, "router.heartbeat.interval"))
        if interval <= 0:
            return None, 0.0
        try:
            url = await self.driver(host).heartbeat_url(self.heartbeats)
        except Exception as exc:  # noqa: BLE001 - heartbeats are optional
            log.warning("host %s: no heartbeats: %s", host.name, exc)
            return None, 0.0
        return (url, max(interval, 0.1)) if url else (None, 0.0)

    async def system_vm_image(self, host: Host) -> str | None:
        """The zone's ``system.vm.image`` for routers on host (None: the host's own
        environment)."""
        async with self.db.sessions() as session:
            image = await get_setting(session, "system.vm.image", {"zone": host.zone_id})
        return str(image).strip() or None

    async def record_event(self, type_: str, description: str, account_id: int | None,
                           domain_id: int | None, level: str = "INFO") -> None:
        """An event no API call caused (the reconcile loop's repairs)."""
        async with self.db.sessions() as session:
            session.add(Event(type=type_, level=level, description=description,
                              state="Completed", account_id=account_id, domain_id=domain_id))
            await session.commit()

    # -- agents ---------------------------------------------------------------------------

    async def agent(self, host: Host, vm: VmInstance, router: Router,
                    timeout: float = PUSH_TIMEOUT) -> AgentClient:
        """A mutual-TLS client that insists the agent's certificate names ``vm.name``."""
        if self._ssl is None or router.control_ip is None:
            raise HostError(f"router {vm.name} has no control address yet")
        endpoint = await self.driver(host).agent_endpoint(vm.name, router.control_ip)
        return AgentClient(endpoint.url, vm.name, self._ssl, timeout=timeout)
