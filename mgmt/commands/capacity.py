"""listCapacity: what each zone (or pod, or cluster) has and what is held of it.

Computed from the tables on every call (``fetchlatest`` changes nothing): CPU and
memory of the hosts that take instances (Up, Enabled, in an Enabled cluster, pod
and zone), times the zone's over-provisioning factor, against what their instances
and routers hold (mgmt.orchestration.allocator); CPU cores; the zone's public
addresses. ``capacityused`` and ``capacityallocated`` are the same figure: Skiff
counts what placed instances were given, it does not measure the guests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from mgmt.api.envelope import ListResult
from mgmt.api.registry import PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import not_found, page_window
from mgmt.db.models import Zone
from mgmt.db.models.infra import Cluster, Pod, PublicIp
from mgmt.orchestration.allocator import MIB, factors, host_views, takes_instances

# CloudStack's capacity types (com.cloud.capacity.Capacity).
MEMORY, CPU, PUBLIC_IP, CPU_CORE = 0, 1, 4, 90
NAMES = {MEMORY: "MEMORY", CPU: "CPU", PUBLIC_IP: "VIRTUAL_NETWORK_PUBLIC_IP", CPU_CORE: "CPU_CORE"}
KINDS = (MEMORY, CPU, PUBLIC_IP, CPU_CORE)


@dataclass
class Tally:
    """Totals of one zone, pod or cluster: type -> [total, used]."""

    values: dict[int, list[float]] = field(default_factory=dict)

    def add(self, kind: int, total: float, used: float) -> None:
        counts = self.values.setdefault(kind, [0, 0])
        counts[0] += total
        counts[1] += used


def _entry(kind: int, total: float, used: float, where: dict) -> dict:
    total, used = int(total), int(used)
    percent = used * 100 / total if total else 0.0
    return {
        "type": kind,
        "name": NAMES[kind],
        **where,
        "capacitytotal": total,
        "capacityused": used,
        "capacityallocated": used,
        "percentused": f"{percent:.2f}",
    }


async def _one(session, model, uuid: str | None, what: str):
    if not uuid:
        return None
    row = await session.scalar(select(model).where(model.uuid == uuid, model.live()))
    if row is None:
        raise not_found(what, uuid)
    return row


@command(
    "listCapacity",
    description="Lists the capacity of zones: memory (type 0, bytes), CPU (1, MHz), public IP "
    "addresses (4) and CPU cores (90); with podid or clusterid, of that pod or cluster "
    "(memory, CPU, cores). Totals include the zone's over-provisioning factors",
    params=[
        *PAGING,
        Param("zoneid", "uuid", description="the zone"),
        Param("podid", "uuid", description="capacity of this pod"),
        Param("clusterid", "uuid", description="capacity of this cluster"),
        Param("type", "integer", description="only this capacity type: 0, 1, 4 or 90"),
        Param("fetchlatest", "boolean", description="accepted: capacity is always computed anew"),
        Param("sortby", choices=("usage",), description="usage: the fullest first"),
    ],
    list_key="capacity",
    roles=ROOT_ONLY,
    since="1.0.0",
    response_fields=(
        ("type", "short", "the capacity type"),
        ("name", "string", "the capacity type's name"),
        ("zoneid", "string", "the zone"),
        ("zonename", "string", "the zone's name"),
        ("podid", "string", "the pod (with podid or clusterid)"),
        ("podname", "string", "the pod's name"),
        ("clusterid", "string", "the cluster (with clusterid)"),
        ("clustername", "string", "the cluster's name"),
        ("capacitytotal", "long", "the total capacity, over-provisioning included"),
        ("capacityused", "long", "the capacity held by instances and routers"),
        ("capacityallocated", "long", "the same as capacityused"),
        ("percentused", "string", "capacityused as a percentage of capacitytotal"),
    ),
)
async def list_capacity(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        zone = await _one(session, Zone, args["zoneid"], "zone")
        pod = await _one(session, Pod, args["podid"], "pod")
        cluster = await _one(session, Cluster, args["clusterid"], "cluster")
        zones = list(
            await session.scalars(
                select(Zone)
                .where(Zone.live(), *([Zone.id == zone.id] if zone else []))
                .order_by(Zone.id)
            )
        )
        groups = _groups(zones, pod, cluster)
        tallies = await _tallies(session, groups, zones, zone, pod, cluster)
        names = await _names(session, groups)
        items = [
            _entry(kind, *tallies[group].values[kind], _where(names, group))
            for group in groups
            for kind in KINDS
            if kind in tallies[group].values and args["type"] in (None, kind)
        ]
        return _filtered(items, args)


Group = tuple[int, int, int]


def _groups(zones: list[Zone], pod: Pod | None, cluster: Cluster | None) -> list[Group]:
    """The groups answered: (zone, pod, cluster) ids, 0 where not asked for."""
    if cluster:
        groups = [(cluster.zone_id, cluster.pod_id, cluster.id)]
        if pod and cluster.pod_id != pod.id:
            groups = []
    elif pod:
        groups = [(pod.zone_id, pod.id, 0)]
    else:
        groups = [(z.id, 0, 0) for z in zones]
    live = {z.id for z in zones}
    return [g for g in groups if g[0] in live]


async def _tallies(session, groups, zones, zone, pod, cluster) -> dict[Group, Tally]:
    tallies = {g: Tally() for g in groups}
    for tally in tallies.values():  # a group without hosts shows zeros
        for kind in (MEMORY, CPU, CPU_CORE):
            tally.add(kind, 0, 0)
    zone_factors = {z.id: await factors(session, z.id) for z in zones}
    for v in await host_views(
        session,
        zone_id=zone.id if zone else None,
        pod_id=pod.id if pod else None,
        cluster_id=cluster.id if cluster else None,
    ):
        key = (v.zone_id, v.pod_id if (pod or cluster) else 0, v.cluster_id if cluster else 0)
        if key not in tallies or takes_instances(v) is not None:
            continue
        tally, f = tallies[key], zone_factors[v.zone_id]
        tally.add(MEMORY, v.memory_mib * MIB * f.memory, v.memory_used * MIB)
        tally.add(CPU, v.cpu_total * f.cpu, v.cpu_used)
        tally.add(CPU_CORE, v.cpu_number, v.cores_used)
    if not (pod or cluster):  # public addresses belong to the zone
        for tally in tallies.values():
            tally.add(PUBLIC_IP, 0, 0)
        taken = case((PublicIp.state != "Free", 1), else_=0)
        for zone_id, total, used in await session.execute(
            select(PublicIp.zone_id, func.count(), func.sum(taken))
            .where(PublicIp.live(), PublicIp.zone_id.in_([g[0] for g in groups]))
            .group_by(PublicIp.zone_id)
        ):
            tallies[(zone_id, 0, 0)].add(PUBLIC_IP, total, used or 0)
    return tallies


def _filtered(items: list[dict], args) -> ListResult:
    """keyword (part of the type's, zone's, pod's or cluster's name), sortby, paging."""
    if args["keyword"]:
        word = args["keyword"].lower()
        keys = ("name", "zonename", "podname", "clustername")
        items = [e for e in items if any(word in str(e.get(k) or "").lower() for k in keys)]
    if args["sortby"] == "usage":
        items.sort(key=lambda e: -float(e["percentused"]))  # stable: ties keep their order
    total = len(items)
    window = page_window(args)
    if window is not None:
        size, offset = window
        items = items[offset : offset + size]
    return ListResult("capacity", items, total)


async def _names(session, groups: list[Group]) -> dict:
    """model -> id -> (uuid, name) for the zones, pods and clusters of ``groups``."""
    names: dict = {}
    for index, model in enumerate((Zone, Pod, Cluster)):
        ids = {g[index] for g in groups if g[index]}
        names[model] = {}
        if ids:
            rows = await session.execute(
                select(model.id, model.uuid, model.name).where(model.id.in_(ids))
            )
            names[model] = {row_id: (uuid, name) for row_id, uuid, name in rows}
    return names


def _where(names: dict, group: Group) -> dict:
    zone_id, pod_id, cluster_id = group
    where = {"zoneid": names[Zone][zone_id][0], "zonename": names[Zone][zone_id][1]}
    if pod_id:
        where |= {"podid": names[Pod][pod_id][0], "podname": names[Pod][pod_id][1]}
    if cluster_id:
        where |= {
            "clusterid": names[Cluster][cluster_id][0],
            "clustername": names[Cluster][cluster_id][1],
        }
    return where
