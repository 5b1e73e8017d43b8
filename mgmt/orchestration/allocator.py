"""Choosing a host for an instance or a router: first fit, fill first, disperse.

A pure core (:func:`choose`) takes what each host has and holds, the request
and the algorithm, and answers the chosen host or none, with the reason each
refused host was refused. :func:`choose_host` feeds it from the database and
answers CloudStack's 533 (insufficient capacity) when no host fits.

Capacity. A host offers ``cpu_number * cpu_speed`` MHz and ``memory_total``
bytes, each multiplied by the zone's over-provisioning factor
(``cpu.overprovisioning.factor``, ``mem.overprovisioning.factor``). It holds
what its instances and routers in HOLDING_STATES ask for. Besides room, a host
must have at least as many cores as asked, cores at least as fast as asked (as
CloudStack's capability check: over-provisioning shares cores, it does not
make them faster), be Up and Enabled, sit in an Enabled cluster, pod and zone,
run the requested hypervisor and carry every requested tag.

Races. Several jobs, on one or several management servers, may place
instances at once; each must see the others' reservations. :func:`choose_host`
therefore first locks the zone's host rows, in id order (so two placements
never wait on each other in a cycle), and only then reads what the hosts hold.
The locks last until the caller's transaction ends, so the caller sets
``vm.host_id`` (and a holding state) in the same transaction and commits at
once (:func:`place` does both). PostgreSQL: ``SELECT ... FOR UPDATE`` on the
host rows; the reads after it (READ COMMITTED) see every placement committed
before the lock was granted. SQLite: a no-op UPDATE of the same rows takes the
database's single write lock (other writers wait, busy_timeout), and the reads
after it see everything committed. Placements in one zone are serialised; each
takes a few milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.api.errors import ApiError, param_error
from mgmt.db.models import Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import Cluster, Host, Pod
from mgmt.db.rowlocks import lock_rows
from mgmt.db.settings import get_setting

log = logging.getLogger(__name__)

ALGORITHMS = ("firstfit", "fillfirst", "disperse")
#: States in which an instance or router holds its CPU and memory on its host.
HOLDING_STATES = ("Starting", "Running", "Stopping", "Migrating")
MIB = 1024 * 1024
#: Refused hosts named in a 533 answer; the rest are counted.
MAX_REASONS = 10


@dataclass(frozen=True)
class HostView:
    """What the allocator knows of one host. Memory in MiB, CPU in MHz."""

    id: int
    name: str
    cpu_number: int
    cpu_speed: int
    memory_mib: int
    cpu_used: int = 0
    memory_used: int = 0
    cores_used: int = 0
    state: str = "Up"
    resource_state: str = "Enabled"
    tags: frozenset[str] = frozenset()
    hypervisor: str = "Netns"
    #: Why the host's cluster, pod or zone takes no new instances, or None.
    blocked: str | None = None
    zone_id: int = 0
    pod_id: int = 0
    cluster_id: int = 0

    @property
    def cpu_total(self) -> int:
        return self.cpu_number * self.cpu_speed


@dataclass(frozen=True)
class Request:
    cpu_number: int
    cpu_speed: int
    memory_mib: int
    tags: frozenset[str] = frozenset()
    avoid: frozenset[int] = frozenset()  # host ids
    hypervisor: str | None = None

    @property
    def cpu_mhz(self) -> int:
        return self.cpu_number * self.cpu_speed

    def describe(self) -> str:
        text = f"{self.cpu_number} CPU x {self.cpu_speed} MHz and {self.memory_mib} MiB"
        if self.hypervisor:
            text += f" on {self.hypervisor}"
        if self.tags:
            text += f" with tags {','.join(sorted(self.tags))}"
        return text


@dataclass(frozen=True)
class Factors:
    """Over-provisioning factors: capacity offered = capacity * factor."""

    cpu: float = 1.0
    memory: float = 1.0


@dataclass
class Choice:
    host: HostView | None
    #: Host name -> why it was refused, in host order.
    refused: dict[str, str] = field(default_factory=dict)


def parse_tags(text: str | None) -> frozenset[str]:
    """``"ssd, fast"`` -> {"ssd", "fast"} (host_tags is comma-separated)."""
    return frozenset(t.strip() for t in (text or "").split(",") if t.strip())


def takes_instances(host: HostView) -> str | None:
    """Why the host takes no new instances at all (state, maintenance, a disabled
    cluster, pod or zone), or None."""
    if host.state != "Up":
        return f"state {host.state}"
    if host.resource_state != "Enabled":
        return f"resource state {host.resource_state}"
    return host.blocked


def _free(total: float, used: int) -> int:
    return int(total) - used


def refusal(host: HostView, request: Request, factors: Factors) -> str | None:
    """Why ``host`` cannot take ``request``, briefly; None when it can."""
    if host.id in request.avoid:
        return "excluded by the caller"
    reason = takes_instances(host)
    if reason:
        return reason
    if request.hypervisor and host.hypervisor != request.hypervisor:
        return f"hypervisor {host.hypervisor}"
    missing = request.tags - host.tags
    if missing:
        return f"lacks tag(s) {','.join(sorted(missing))}"
    if host.cpu_number < request.cpu_number:
        return f"has {host.cpu_number} core(s)"
    if host.cpu_speed < request.cpu_speed:
        return f"cores run at {host.cpu_speed} MHz"
    cpu_free = _free(host.cpu_total * factors.cpu, host.cpu_used)
    if cpu_free < request.cpu_mhz:
        return f"{max(cpu_free, 0)} of {int(host.cpu_total * factors.cpu)} MHz free"
    memory_free = _free(host.memory_mib * factors.memory, host.memory_used)
    if memory_free < request.memory_mib:
        return f"{max(memory_free, 0)} of {int(host.memory_mib * factors.memory)} MiB free"
    return None


def load(host: HostView, factors: Factors) -> float:
    """How full the host is: the larger of its CPU and memory fractions in use."""
    cpu = host.cpu_used / (host.cpu_total * factors.cpu) if host.cpu_total else 1.0
    memory = host.memory_used / (host.memory_mib * factors.memory) if host.memory_mib else 1.0
    return max(cpu, memory)


def choose(
    hosts: Sequence[HostView],
    request: Request,
    algorithm: str = "firstfit",
    factors: Factors = Factors(),
) -> Choice:
    """The host ``algorithm`` picks among those that fit ``request``; ``hosts`` in
    host order (ties go to the earlier host).

    firstfit: the first that fits. fillfirst: the fullest that fits (pack, so that
    other hosts stay empty). disperse: the emptiest (spread the load)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown allocation algorithm {algorithm!r}: use {', '.join(ALGORITHMS)}")
    refused: dict[str, str] = {}
    fitting: list[HostView] = []
    for host in hosts:
        reason = refusal(host, request, factors)
        if reason is None:
            fitting.append(host)
            if algorithm == "firstfit":
                break
        else:
            refused[host.name] = reason
    if not fitting:
        return Choice(None, refused)
    if algorithm == "fillfirst":
        # max() keeps the first of equals: host order breaks ties.
        return Choice(max(fitting, key=lambda h: load(h, factors)), refused)
    if algorithm == "disperse":
        return Choice(min(fitting, key=lambda h: load(h, factors)), refused)
    return Choice(fitting[0], refused)


def insufficient(zone_name: str, request: Request, choice: Choice) -> ApiError:
    """533, saying what was asked and why each host was refused."""
    if not choice.refused:
        return ApiError(
            533,
            f"Insufficient capacity: zone {zone_name} has no hosts "
            f"(asked for {request.describe()})",
        )
    items = list(choice.refused.items())
    reasons = "; ".join(f"{name}: {why}" for name, why in items[:MAX_REASONS])
    if len(items) > MAX_REASONS:
        reasons += f"; and {len(items) - MAX_REASONS} more host(s)"
    return ApiError(
        533,
        f"Insufficient capacity: no host in zone {zone_name} can take "
        f"{request.describe()} ({reasons})",
    )


# --- the database -------------------------------------------------------------------------


async def host_views(
    session: AsyncSession,
    *,
    zone_id: int | None = None,
    pod_id: int | None = None,
    cluster_id: int | None = None,
) -> list[HostView]:
    """The live Routing hosts (of a zone, pod or cluster), in id order, with what
    their instances and routers in HOLDING_STATES hold."""
    query = (
        select(
            Host,
            Cluster.name,
            Cluster.allocation_state,
            Pod.name,
            Pod.allocation_state,
            Zone.name,
            Zone.allocation_state,
        )
        .join(Cluster, Cluster.id == Host.cluster_id)
        .join(Pod, Pod.id == Host.pod_id)
        .join(Zone, Zone.id == Host.zone_id)
        .where(Host.live(), Host.type == "Routing")
        .order_by(Host.id)
        # Rows read after the lock must win over any this session loaded before it.
        .execution_options(populate_existing=True)
    )
    for column, value in (
        (Host.zone_id, zone_id),
        (Host.pod_id, pod_id),
        (Host.cluster_id, cluster_id),
    ):
        if value is not None:
            query = query.where(column == value)
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    held = {
        host_id: (int(cpu or 0), int(memory or 0), int(cores or 0))
        for host_id, cpu, memory, cores in await session.execute(
            select(
                VmInstance.host_id,
                func.sum(VmInstance.cpu_number * VmInstance.cpu_speed),
                func.sum(VmInstance.memory),
                func.sum(VmInstance.cpu_number),
            )
            .where(
                VmInstance.host_id.in_([row[0].id for row in rows]),
                VmInstance.state.in_(HOLDING_STATES),
                VmInstance.live(),
            )
            .group_by(VmInstance.host_id)
        )
    }
    views = []
    for host, cluster, cluster_state, pod, pod_state, zone, zone_state in rows:
        blocked = None
        for what, name, state in (
            ("cluster", cluster, cluster_state),
            ("pod", pod, pod_state),
            ("zone", zone, zone_state),
        ):
            if state != "Enabled":
                blocked = f"{what} {name} is {state}"
                break
        cpu, memory, cores = held.get(host.id, (0, 0, 0))
        views.append(
            HostView(
                id=host.id,
                name=host.name,
                cpu_number=host.cpu_number or 0,
                cpu_speed=host.cpu_speed or 0,
                memory_mib=(host.memory_total or 0) // MIB,
                cpu_used=cpu,
                memory_used=memory,
                cores_used=cores,
                state=host.state,
                resource_state=host.resource_state,
                tags=parse_tags(host.host_tags),
                hypervisor=host.hypervisor,
                blocked=blocked,
                zone_id=host.zone_id,
                pod_id=host.pod_id,
                cluster_id=host.cluster_id,
            )
        )
    return views


async def factors(session: AsyncSession, zone_id: int) -> Factors:
    scope = {"zone": zone_id}
    return Factors(
        cpu=float(await get_setting(session, "cpu.overprovisioning.factor", scope)),
        memory=float(await get_setting(session, "mem.overprovisioning.factor", scope)),
    )


async def lock_zone_hosts(session: AsyncSession, zone_id: int) -> None:
    """Serialise placements in the zone until the session's transaction ends (see the
    module's docstring)."""
    await _lock_hosts(session, (Host.zone_id == zone_id, Host.live()))


async def lock_host(session: AsyncSession, host_id: int) -> None:
    """Serialise choices one host's state decides (its routers' control addresses),
    across servers, until the session's transaction ends."""
    await _lock_hosts(session, (Host.id == host_id,))


async def _lock_hosts(session: AsyncSession, hosts: tuple) -> None:
    await lock_rows(session, Host, *hosts)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise param_error(f"{name} must be a positive whole number, not {value!r}")
    return value


async def choose_host(
    session: AsyncSession,
    zone_id: int,
    *,
    cpu_number: int,
    cpu_speed: int,
    memory_mib: int,
    tags: Iterable[str] = (),
    avoid: Iterable[int] = (),
    hypervisor: str | None = None,
) -> Host:
    """The host the zone's ``vm.allocation.algorithm`` picks for an instance of this
    size; ``avoid`` holds host ids not to use (e.g. where a start just failed).

    The zone's hosts stay locked until the session's transaction ends: set the
    instance's ``host_id`` in it and commit at once (or use :func:`place`). Raises
    ApiError 533 when no host fits, naming why each host was refused."""
    request = Request(
        cpu_number=_positive("cpu_number", cpu_number),
        cpu_speed=_positive("cpu_speed", cpu_speed),
        memory_mib=_positive("memory_mib", memory_mib),
        tags=frozenset(t.strip() for t in tags if t.strip()),
        avoid=frozenset(avoid),
        hypervisor=hypervisor,
    )
    zone = await session.get(Zone, zone_id)
    if zone is None or zone.removed is not None:
        raise param_error(f"no zone with internal id {zone_id}")
    await lock_zone_hosts(session, zone_id)
    algorithm = str(await get_setting(session, "vm.allocation.algorithm", {"zone": zone_id}))
    if algorithm not in ALGORITHMS:
        log.warning(
            "zone %s: vm.allocation.algorithm %r is unknown; using firstfit", zone.name, algorithm
        )
        algorithm = "firstfit"
    views = await host_views(session, zone_id=zone_id)
    choice = choose(views, request, algorithm, await factors(session, zone_id))
    if choice.host is None:
        raise insufficient(zone.name, request, choice)
    return await session.get_one(Host, choice.host.id)


async def place(
    session: AsyncSession,
    vm: VmInstance,
    *,
    tags: Iterable[str] = (),
    avoid: Iterable[int] = (),
    hypervisor: str | None = None,
) -> Host:
    """Choose a host for ``vm`` in its zone and reserve it: sets ``vm.host_id`` and,
    unless the VM already holds resources, state Starting. The caller commits."""
    if vm.host_id is not None:  # a retry: its own reservation must not count
        vm.host_id = None
        await session.flush()
    host = await choose_host(
        session,
        vm.zone_id,
        cpu_number=vm.cpu_number,
        cpu_speed=vm.cpu_speed,
        memory_mib=vm.memory,
        tags=tags,
        avoid=avoid,
        hypervisor=hypervisor,
    )
    vm.host_id = host.id
    if vm.state not in HOLDING_STATES:
        vm.state = "Starting"
    await session.flush()
    return host
