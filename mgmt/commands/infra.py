"""Infrastructure: pods, clusters, hosts, hypervisors, physical networks, traffic
types, network service providers and public IP ranges.

All of it is root-admin only, as in CloudStack, except listHypervisors.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import ALL_ROLES, PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import date, new_id, not_found, of_uuid, paged
from mgmt.db.models import Domain, Zone
from mgmt.db.models.infra import (
    Cluster,
    Host,
    PhysicalNetwork,
    Pod,
    PublicIp,
    ServiceProvider,
    TrafficType,
    VlanIpRange,
)
from mgmt.db.models.networks import Network
from mgmt.db.types import UTCDateTime, new_uuid, utcnow
from mgmt.orchestration import systemvms

HYPERVISORS = ("KVM", "Netns")
TRAFFIC_TYPES = ("Public", "Guest", "Management", "Storage")
ISOLATION_METHODS = ("VLAN", "VXLAN", "GRE", "STT", "L3", "BCF_SEGMENT", "SSP", "ODL", "VCS")
HOST_STATES = ("Up", "Down", "Disconnected", "Connecting", "Alert", "Error", "Removed")
RESOURCE_STATES = (
    "Enabled",
    "Disabled",
    "Creating",
    "PrepareForMaintenance",
    "ErrorInMaintenance",
    "Maintenance",
    "ErrorInPrepareForMaintenance",
)
HOST_TYPES = ("Routing", "SecondaryStorage", "ConsoleProxy", "Storage", "SecondaryStorageVM")
#: Providers every physical network gets, with the services they offer (as CloudStack).
PROVIDERS = {
    "VirtualRouter": (
        "Dhcp",
        "Dns",
        "Firewall",
        "Gateway",
        "Lb",
        "PortForwarding",
        "SourceNat",
        "StaticNat",
        "UserData",
        "Vpn",
    ),
    "VpcVirtualRouter": (
        "Dhcp",
        "Dns",
        "Gateway",
        "Lb",
        "NetworkACL",
        "PortForwarding",
        "SourceNat",
        "StaticNat",
        "UserData",
        "Vpn",
    ),
}
MAX_RANGE = 65_536  # a /16


# --- helpers ------------------------------------------------------------------------------


async def _live(session, model, uuid: str, what: str):
    row = await session.scalar(select(model).where(model.uuid == uuid, model.live()))
    if row is None:
        raise not_found(what, uuid)
    return row


async def _by_id(session, model, ids) -> dict[int, Any]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return {r.id: r for r in (await session.scalars(select(model).where(model.id.in_(ids))))}


async def _count(session, model, *where) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(model).where(model.live(), *where))
        or 0
    )


def _address(name: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise param_error(f"{name} {value[:60]!r} is not an IPv4 address") from None


def _subnet(gateway: str, netmask: str) -> ipaddress.IPv4Network:
    _address("gateway", gateway)
    try:
        return ipaddress.IPv4Network(f"{gateway}/{netmask}", strict=False)
    except ValueError:
        raise param_error(f"netmask {netmask[:60]!r} is not an IPv4 netmask") from None


def _check_range(
    subnet: ipaddress.IPv4Network, start: str | None, end: str | None
) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv4Address | None]:
    """startip/endip inside the subnet of gateway/netmask, start <= end."""
    first = _address("startip", start) if start else None
    last = _address("endip", end) if end else None
    for name, addr in (("startip", first), ("endip", last)):
        if addr is not None and addr not in subnet:
            raise param_error(
                f"{name} {addr} is outside the subnet {subnet} of the gateway and netmask"
            )
    if first is not None and last is not None and first > last:
        raise param_error(f"startip {first} is after endip {last}")
    return first, last


def _split_tags(value: list[str] | None) -> str | None:
    return ",".join(value) if value else None


# --- pods ---------------------------------------------------------------------------------


def pod_fields(p: Pod, zone: Zone | None) -> dict:
    return {
        "id": p.uuid,
        "name": p.name,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "gateway": p.gateway,
        "netmask": p.netmask,
        "startip": [p.start_ip] if p.start_ip else None,
        "endip": [p.end_ip] if p.end_ip else None,
        "ipranges": (
            [{"startip": p.start_ip, "endip": p.end_ip, "forsystemvms": "0", "vlanid": None}]
            if p.start_ip
            else None
        ),
        "allocationstate": p.allocation_state,
        "hasannotations": False,
    }


@command(
    "createPod",
    description="Creates a pod in a zone",
    params=[
        Param("name", required=True, description="pod name"),
        Param("zoneid", "uuid", required=True, description="the zone"),
        Param("gateway", required=True, description="gateway of the pod's management network"),
        Param("netmask", required=True, description="netmask of the pod's management network"),
        Param("startip", description="first address reserved for system VMs"),
        Param("endip", description="last address reserved for system VMs (default startip)"),
        Param("allocationstate", choices=("Enabled", "Disabled"), description="default Enabled"),
    ],
    response="pod",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def create_pod(call, args) -> ObjectResult:
    subnet = _subnet(args["gateway"], args["netmask"])
    _check_range(subnet, args["startip"], args["endip"])
    async with call.server.db.sessions() as session:
        zone = await _live(session, Zone, args["zoneid"], "zone")
        if await _count(session, Pod, Pod.zone_id == zone.id, Pod.name == args["name"]):
            raise param_error(f"a pod named {args['name']} exists already in zone {zone.name}")
        pod = Pod(
            name=args["name"],
            zone_id=zone.id,
            gateway=args["gateway"],
            netmask=args["netmask"],
            start_ip=args["startip"],
            end_ip=args["endip"] or args["startip"],
            allocation_state=args["allocationstate"] or "Enabled",
        )
        session.add(pod)
        await session.commit()
        await call.server.events.record(call, "POD.CREATE", f"created pod {pod.name}", pod)
        return ObjectResult("pod", pod_fields(pod, zone))


@command(
    "listPods",
    description="Lists pods",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("zoneid", "uuid"),
        Param("allocationstate", choices=("Enabled", "Disabled")),
        Param("showcapacities", "boolean", description="accepted for compatibility"),
    ],
    list_key="pod",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def list_pods(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Pod).where(Pod.live()).order_by(Pod.id)
        if args["id"]:
            query = query.where(Pod.uuid == args["id"])
        if args["name"]:
            query = query.where(Pod.name == args["name"])
        if args["zoneid"]:
            query = query.where(of_uuid(Pod.zone_id, Zone, args["zoneid"]))
        if args["allocationstate"]:
            query = query.where(Pod.allocation_state == args["allocationstate"])
        if args["keyword"]:
            query = query.where(Pod.name.contains(args["keyword"], autoescape=True))
        pods, total = await paged(session, query, args)
        zones = await _by_id(session, Zone, (p.zone_id for p in pods))
        return ListResult("pod", [pod_fields(p, zones.get(p.zone_id)) for p in pods], total)


@command(
    "updatePod",
    description="Updates a pod",
    params=[
        Param("id", "uuid", required=True, description="the pod"),
        Param("name"),
        Param("gateway"),
        Param("netmask"),
        Param("startip"),
        Param("endip"),
        Param("allocationstate", choices=("Enabled", "Disabled")),
    ],
    response="pod",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def update_pod(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        pod = await _live(session, Pod, args["id"], "pod")
        gateway = args["gateway"] or pod.gateway
        netmask = args["netmask"] or pod.netmask
        start = args["startip"] or pod.start_ip
        end = args["endip"] or (args["startip"] if args["startip"] else pod.end_ip)
        _check_range(_subnet(gateway, netmask), start, end)
        if (
            args["name"]
            and args["name"] != pod.name
            and await _count(session, Pod, Pod.zone_id == pod.zone_id, Pod.name == args["name"])
        ):
            raise param_error(f"a pod named {args['name']} exists already in this zone")
        pod.name = args["name"] or pod.name
        pod.gateway, pod.netmask, pod.start_ip, pod.end_ip = gateway, netmask, start, end
        if args["allocationstate"]:
            pod.allocation_state = args["allocationstate"]
        await session.commit()
        zone = await session.get(Zone, pod.zone_id)
        await call.server.events.record(call, "POD.EDIT", f"updated pod {pod.name}", pod)
        return ObjectResult("pod", pod_fields(pod, zone))


@command(
    "deletePod",
    description="Deletes a pod that has no clusters left",
    params=[Param("id", "uuid", required=True, description="the pod")],
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def delete_pod(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        pod = await _live(session, Pod, args["id"], "pod")
        clusters = await _count(session, Cluster, Cluster.pod_id == pod.id)
        if clusters:
            raise ApiError(
                536, f"pod {pod.name} still has {clusters} cluster(s); delete them first"
            )
        pod.remove()
        await session.commit()
        await call.server.events.record(call, "POD.DELETE", f"deleted pod {pod.name}", pod)
    return PlainResult({"success": True})


# --- clusters -----------------------------------------------------------------------------


def cluster_fields(c: Cluster, zone: Zone | None, pod: Pod | None) -> dict:
    return {
        "id": c.uuid,
        "name": c.name,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "podid": pod.uuid if pod else None,
        "podname": pod.name if pod else None,
        "hypervisortype": c.hypervisor,
        "clustertype": c.cluster_type,
        "allocationstate": c.allocation_state,
        "managedstate": c.managed_state,
        "cpuovercommitratio": "1.0",
        "memoryovercommitratio": "1.0",
        "hasannotations": False,
    }


@command(
    "addCluster",
    description="Adds a cluster of hosts of one hypervisor to a pod",
    params=[
        Param("clustername", required=True, description="cluster name"),
        Param("clustertype", required=True, choices=("CloudManaged", "ExternalManaged")),
        Param("hypervisor", required=True, choices=HYPERVISORS),
        Param("zoneid", "uuid", required=True),
        Param("podid", "uuid", required=True),
        Param("allocationstate", choices=("Enabled", "Disabled")),
        Param("url", description="accepted for compatibility (external clusters)"),
        Param("username", description="accepted for compatibility"),
        Param("password", description="accepted for compatibility"),
    ],
    list_key="cluster",
    roles=ROOT_ONLY,
    since="2.2.0",
)
async def add_cluster(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        zone = await _live(session, Zone, args["zoneid"], "zone")
        pod = await _live(session, Pod, args["podid"], "pod")
        if pod.zone_id != zone.id:
            raise param_error(f"pod {pod.name} (podid) is not in zone {zone.name} (zoneid)")
        if await _count(
            session, Cluster, Cluster.pod_id == pod.id, Cluster.name == args["clustername"]
        ):
            raise param_error(
                f"a cluster named {args['clustername']} exists already in pod {pod.name}"
            )
        cluster = Cluster(
            name=args["clustername"],
            zone_id=zone.id,
            pod_id=pod.id,
            hypervisor=args["hypervisor"],
            cluster_type=args["clustertype"],
            allocation_state=args["allocationstate"] or "Enabled",
        )
        session.add(cluster)
        await session.commit()
        await call.server.events.record(
            call, "CLUSTER.CREATE", f"added cluster {cluster.name}", cluster
        )
        return ListResult("cluster", [cluster_fields(cluster, zone, pod)])


@command(
    "listClusters",
    description="Lists clusters",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("zoneid", "uuid"),
        Param("podid", "uuid"),
        Param("hypervisor", choices=HYPERVISORS),
        Param("clustertype", choices=("CloudManaged", "ExternalManaged")),
        Param("allocationstate", choices=("Enabled", "Disabled")),
        Param("managedstate"),
        Param("showcapacities", "boolean", description="accepted for compatibility"),
    ],
    list_key="cluster",
    roles=ROOT_ONLY,
    since="2.2.0",
)
async def list_clusters(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Cluster).where(Cluster.live()).order_by(Cluster.id)
        if args["id"]:
            query = query.where(Cluster.uuid == args["id"])
        if args["name"]:
            query = query.where(Cluster.name == args["name"])
        if args["zoneid"]:
            query = query.where(of_uuid(Cluster.zone_id, Zone, args["zoneid"]))
        if args["podid"]:
            query = query.where(of_uuid(Cluster.pod_id, Pod, args["podid"]))
        if args["hypervisor"]:
            query = query.where(Cluster.hypervisor == args["hypervisor"])
        if args["clustertype"]:
            query = query.where(Cluster.cluster_type == args["clustertype"])
        if args["allocationstate"]:
            query = query.where(Cluster.allocation_state == args["allocationstate"])
        if args["managedstate"]:
            query = query.where(Cluster.managed_state == args["managedstate"])
        if args["keyword"]:
            query = query.where(Cluster.name.contains(args["keyword"], autoescape=True))
        clusters, total = await paged(session, query, args)
        zones = await _by_id(session, Zone, (c.zone_id for c in clusters))
        pods = await _by_id(session, Pod, (c.pod_id for c in clusters))
        items = [cluster_fields(c, zones.get(c.zone_id), pods.get(c.pod_id)) for c in clusters]
        return ListResult("cluster", items, total)


@command(
    "updateCluster",
    description="Updates a cluster",
    params=[
        Param("id", "uuid", required=True, description="the cluster"),
        Param("clustername"),
        Param("allocationstate", choices=("Enabled", "Disabled")),
        Param("managedstate", choices=("Managed", "Unmanaged")),
        Param("clustertype", choices=("CloudManaged", "ExternalManaged")),
        Param("hypervisor", choices=HYPERVISORS),
    ],
    response="cluster",
    roles=ROOT_ONLY,
    since="2.2.0",
)
async def update_cluster(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        cluster = await _live(session, Cluster, args["id"], "cluster")
        if args["hypervisor"] and args["hypervisor"] != cluster.hypervisor:
            raise param_error("hypervisor of a cluster cannot be changed")
        if args["clustername"]:
            cluster.name = args["clustername"]
        for param, attr in (
            ("allocationstate", "allocation_state"),
            ("managedstate", "managed_state"),
            ("clustertype", "cluster_type"),
        ):
            if args[param]:
                setattr(cluster, attr, args[param])
        await session.commit()
        zone = await session.get(Zone, cluster.zone_id)
        pod = await session.get(Pod, cluster.pod_id)
        await call.server.events.record(
            call, "CLUSTER.EDIT", f"updated cluster {cluster.name}", cluster
        )
        return ObjectResult("cluster", cluster_fields(cluster, zone, pod))


@command(
    "deleteCluster",
    description="Deletes a cluster that has no hosts left",
    params=[Param("id", "uuid", required=True, description="the cluster")],
    roles=ROOT_ONLY,
    since="2.2.0",
)
async def delete_cluster(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        cluster = await _live(session, Cluster, args["id"], "cluster")
        hosts = await _count(session, Host, Host.cluster_id == cluster.id)
        if hosts:
            raise ApiError(
                536, f"cluster {cluster.name} still has {hosts} host(s); delete them first"
            )
        cluster.remove()
        await session.commit()
        await call.server.events.record(
            call, "CLUSTER.DELETE", f"deleted cluster {cluster.name}", cluster
        )
    return PlainResult({"success": True})


# --- hosts --------------------------------------------------------------------------------


def host_fields(h: Host, zone: Zone | None, pod: Pod | None, cluster: Cluster | None) -> dict:
    """What listHosts answers; the password is never part of it."""
    return {
        "id": h.uuid,
        "name": h.name,
        "type": h.type,
        "state": h.state,
        "resourcestate": h.resource_state,
        "ipaddress": h.ip_address,
        "hypervisor": h.hypervisor,
        "clusterid": cluster.uuid if cluster else None,
        "clustername": cluster.name if cluster else None,
        "clustertype": cluster.cluster_type if cluster else None,
        "podid": pod.uuid if pod else None,
        "podname": pod.name if pod else None,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "cpunumber": h.cpu_number,
        "cpuspeed": h.cpu_speed,
        "memorytotal": h.memory_total,
        "hosttags": h.host_tags,
        "created": date(h.created),
        "islocalstorageactive": False,
        "hahost": False,
        "hasannotations": False,
    }


async def _host_answer(session, h: Host) -> dict:
    return host_fields(
        h,
        await session.get(Zone, h.zone_id),
        await session.get(Pod, h.pod_id),
        await session.get(Cluster, h.cluster_id),
    )


def _parse_host_url(url: str) -> str:
    """The host name or address in ``url`` (``http://kvm1``, ``kvm1``, ``netns://lab1``)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if not host or not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}", host):
        raise param_error(f"url {url[:80]!r} does not name a host (e.g. http://kvm1.example)")
    return host


def _cpu_mhz() -> int:
    """MHz of this machine's cores (the allocator compares it with an offering's
    cpuspeed): /proc/cpuinfo's "cpu MHz", else cpufreq's maximum; 0 when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz":
                    return int(float(value))
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="ascii") as f:
            return int(f.read().strip()) // 1000  # kHz
    except (OSError, ValueError):
        return 0


async def _prepare_ssh_host(args, address: str) -> tuple[str, tuple[int, int, int]]:
    """Pin the SSH host key the URL names (``hostkey=``), else the one the host presents
    now, then prepare it through its driver (bridges, control network) and read its
    capacity: the driver's connection refuses a host presenting another key than the
    pinned one. A host that cannot be reached or prepared is not added; the error says
    why."""
    from mgmt.orchestration.hosts.driver import HostError
    from mgmt.orchestration.hosts.ssh import (
        SshHostDriver,
        fetch_host_key,
        host_key_text,
        parse_host_key,
        parse_ssh_url,
    )

    try:
        url = parse_ssh_url(args["url"])
        given = url.options.get("hostkey")
        if given:
            host_key = host_key_text(parse_host_key(given))
        else:
            host_key = await fetch_host_key(url.address, url.port)
        probe = Host(name=address, url=args["url"], hypervisor=args["hypervisor"],
                     username=args["username"], password=args["password"], host_key=host_key)
        driver = SshHostDriver.for_host(probe)
        try:
            facts = await driver.prepare()
        finally:
            await driver.close()
    except (HostError, OSError, ValueError) as exc:
        raise ApiError(530, f"cannot add host {address}: {exc}") from None
    return host_key, (facts.cpus, facts.cpu_speed_mhz, facts.memory_bytes)


def _local_capacity() -> tuple[int, int, int]:
    """(cpus, MHz, memory bytes) of this machine: a Netns host is this machine."""
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return cpus, _cpu_mhz(), memory


@command(
    "addHost",
    description="Adds a hypervisor host to a cluster. The host is recorded as Up at once: "
    "no agent connects yet (host drivers come in a later issue)",
    params=[
        Param("zoneid", "uuid", required=True),
        Param("podid", "uuid", required=True),
        Param("url", required=True, length=1024, description="e.g. http://kvm1.example"),
        Param("hypervisor", required=True, choices=HYPERVISORS),
        Param("username", description="login for the host (required for KVM)"),
        Param("password", description="password for the host; stored, never shown"),
        Param("clusterid", "uuid", description="the cluster (or clustername)"),
        Param("clustername", description="the cluster by name, in the pod"),
        Param("hosttags", "list", description="comma-separated host tags"),
        Param("allocationstate", choices=("Enable", "Disable")),
    ],
    list_key="host",
    roles=ROOT_ONLY,
    since="2.0.0",
)
async def add_host(call, args) -> ListResult:
    """Record a host. With no agent to talk to yet, it starts in state Up (resource state
    Enabled); a later issue connects real host drivers that set the state from the host."""
    ssh = args["url"].lower().startswith("ssh://")
    # qemu://<lab>?image=...: VMs under qemu on this machine (KVM, or TCG without it)
    qemu = args["url"].lower().startswith("qemu://")
    if qemu:
        from mgmt.orchestration.hosts.qemu import parse_qemu_url

        if args["hypervisor"] != "KVM":
            raise param_error("url: a qemu:// host is a KVM host (hypervisor=KVM)")
        try:
            parse_qemu_url(args["url"])
        except ValueError as exc:
            raise param_error(f"url: {exc}") from None
    if args["hypervisor"] == "KVM" and not (ssh or qemu) and not (
            args["username"] and args["password"]):
        raise param_error("username and password are required for a KVM host")
    address = _parse_host_url(args["url"])
    if args["hypervisor"] == "Netns":
        from appliances.lab.names import LabNameError, check_name

        try:
            check_name(address)
        except LabNameError as exc:
            raise param_error(f"url: a Netns host is netns://<lab name>; {exc}") from None
    async with call.server.db.sessions() as session:
        zone = await _live(session, Zone, args["zoneid"], "zone")
        pod = await _live(session, Pod, args["podid"], "pod")
        if pod.zone_id != zone.id:
            raise param_error(f"pod {pod.name} (podid) is not in zone {zone.name} (zoneid)")
        if args["clusterid"]:
            cluster = await _live(session, Cluster, args["clusterid"], "cluster")
        elif args["clustername"]:
            cluster = await session.scalar(
                select(Cluster).where(
                    Cluster.pod_id == pod.id, Cluster.name == args["clustername"], Cluster.live()
                )
            )
            if cluster is None:
                raise param_error(
                    f"no cluster named {args['clustername']} (clustername) in pod {pod.name}"
                )
        else:
            raise param_error("missing parameter clusterid (or clustername)")
        if cluster.pod_id != pod.id:
            raise param_error(f"cluster {cluster.name} (clusterid) is not in pod {pod.name}")
        if cluster.hypervisor != args["hypervisor"]:
            raise param_error(
                f"hypervisor {args['hypervisor']} does not match cluster "
                f"{cluster.name}, which is {cluster.hypervisor}"
            )
        if await _count(session, Host, Host.name == address):
            raise param_error(f"host {address} (url) has been added already")
        local = args["hypervisor"] == "Netns" or qemu
        cpus, speed, memory = _local_capacity() if local else (0, 0, 0)
        host_key = None
        if ssh:
            host_key, (cpus, speed, memory) = await _prepare_ssh_host(args, address)
        host = Host(
            name=address,
            zone_id=zone.id,
            pod_id=pod.id,
            cluster_id=cluster.id,
            url=args["url"],
            username=args["username"],
            password=args["password"],
            hypervisor=args["hypervisor"],
            ip_address=address,
            state="Up",
            resource_state="Disabled" if args["allocationstate"] == "Disable" else "Enabled",
            host_tags=_split_tags(args["hosttags"]),
            cpu_number=cpus,
            cpu_speed=speed,
            memory_total=memory,
            host_key=host_key,
        )
        session.add(host)
        await session.commit()
        await call.server.events.record(call, "HOST.ADD", f"added host {host.name}", host)
        systemvms.kick(call.server.orchestrator)  # the zone's system VMs may start now
        return ListResult("host", [host_fields(host, zone, pod, cluster)])


@command(
    "listHosts",
    description="Lists hosts",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("type", choices=HOST_TYPES),
        Param("state", choices=HOST_STATES),
        Param("resourcestate", choices=RESOURCE_STATES),
        Param("hypervisor", choices=HYPERVISORS),
        Param("clusterid", "uuid"),
        Param("podid", "uuid"),
        Param("zoneid", "uuid"),
        Param("hosttags", description="hosts carrying this tag"),
        Param("details", "list", description="accepted for compatibility"),
    ],
    list_key="host",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def list_hosts(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Host).where(Host.live()).order_by(Host.id)
        for param, column in (
            ("id", Host.uuid),
            ("name", Host.name),
            ("type", Host.type),
            ("state", Host.state),
            ("resourcestate", Host.resource_state),
            ("hypervisor", Host.hypervisor),
        ):
            if args[param]:
                query = query.where(column == args[param])
        for param, column, model in (
            ("clusterid", Host.cluster_id, Cluster),
            ("podid", Host.pod_id, Pod),
            ("zoneid", Host.zone_id, Zone),
        ):
            if args[param]:
                query = query.where(column.in_(select(model.id).where(model.uuid == args[param])))
        if args["keyword"]:
            query = query.where(Host.name.contains(args["keyword"], autoescape=True))
        if args["hosttags"]:
            tag = args["hosttags"]
            query = query.where(
                or_(
                    Host.host_tags == tag,
                    Host.host_tags.startswith(f"{tag},", autoescape=True),
                    Host.host_tags.endswith(f",{tag}", autoescape=True),
                    Host.host_tags.contains(f",{tag},", autoescape=True),
                )
            )
        hosts, total = await paged(session, query, args)
        zones = await _by_id(session, Zone, (h.zone_id for h in hosts))
        pods = await _by_id(session, Pod, (h.pod_id for h in hosts))
        clusters = await _by_id(session, Cluster, (h.cluster_id for h in hosts))
        items = [
            host_fields(h, zones.get(h.zone_id), pods.get(h.pod_id), clusters.get(h.cluster_id))
            for h in hosts
        ]
        return ListResult("host", items, total)


@command(
    "updateHost",
    description="Updates a host: enables or disables it for allocation, sets its tags",
    params=[
        Param("id", "uuid", required=True, description="the host"),
        Param("allocationstate", choices=("Enable", "Disable")),
        Param("hosttags", "list", description="the host's tags (replaces them)"),
        Param("name", description="new name"),
        Param("url", description="accepted for compatibility"),
    ],
    response="host",
    roles=ROOT_ONLY,
    since="2.0.0",
)
async def update_host(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        host = await _live(session, Host, args["id"], "host")
        if args["allocationstate"]:
            if host.resource_state not in ("Enabled", "Disabled"):
                raise param_error(
                    f"host {host.name} is in {host.resource_state}; cancel the "
                    "maintenance before changing allocationstate"
                )
            host.resource_state = "Enabled" if args["allocationstate"] == "Enable" else "Disabled"
        if call.params.has("hosttags"):
            host.host_tags = _split_tags(args["hosttags"])
        if args["name"]:
            host.name = args["name"]
        await session.commit()
        await call.server.events.record(call, "HOST.UPDATE", f"updated host {host.name}", host)
        return ObjectResult("host", await _host_answer(session, host))


@command(
    "deleteHost",
    description="Deletes a host in maintenance (or disconnected; forced=true: any host)",
    params=[
        Param("id", "uuid", required=True, description="the host"),
        Param("forced", "boolean", description="delete even an Up host not in maintenance"),
        Param("forcedestroylocalstorage", "boolean", description="accepted for compatibility"),
    ],
    roles=ROOT_ONLY,
    since="2.0.0",
)
async def delete_host(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        host = await _live(session, Host, args["id"], "host")
        if not args["forced"] and host.state == "Up" and host.resource_state != "Maintenance":
            raise ApiError(
                536,
                f"host {host.name} is Up and not in maintenance; "
                "prepare it for maintenance first or pass forced=true",
            )
        host.remove()
        await session.commit()
        await call.server.events.record(call, "HOST.DELETE", f"deleted host {host.name}", host)
    return PlainResult({"success": True})


@command(
    "prepareHostForMaintenance",
    description="Puts a host into maintenance (no instances run on hosts yet, so at once)",
    params=[Param("id", "uuid", required=True, description="the host")],
    response="host",
    is_async=True,
    instance_type="Host",
    resumable=True,
    roles=ROOT_ONLY,
    since="2.0.0",
)
async def prepare_host_for_maintenance(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        host = await _live(session, Host, args["id"], "host")
        if host.resource_state != "Maintenance":
            host.resource_state = "Maintenance"
            await session.commit()
            await call.server.events.record(
                call, "MAINT.PREPARE", f"host {host.name} in maintenance", host
            )
        return ObjectResult("host", await _host_answer(session, host))


@command(
    "cancelHostMaintenance",
    description="Takes a host out of maintenance (resource state Enabled)",
    params=[Param("id", "uuid", required=True, description="the host")],
    response="host",
    is_async=True,
    instance_type="Host",
    resumable=True,
    roles=ROOT_ONLY,
    since="2.0.0",
)
async def cancel_host_maintenance(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        host = await _live(session, Host, args["id"], "host")
        if host.resource_state not in (
            "Maintenance",
            "PrepareForMaintenance",
            "ErrorInMaintenance",
            "ErrorInPrepareForMaintenance",
        ):
            raise param_error(f"host {host.name} is not in maintenance ({host.resource_state})")
        host.resource_state = "Enabled"
        await session.commit()
        await call.server.events.record(
            call, "MAINT.CANCEL", f"host {host.name} out of maintenance", host
        )
        return ObjectResult("host", await _host_answer(session, host))


@command(
    "listHypervisors",
    description="Lists the hypervisors Skiff supports: KVM and Netns (the lab's namespaces)",
    params=[Param("zoneid", "uuid", description="accepted; every zone supports both")],
    list_key="hypervisor",
    roles=ALL_ROLES,
    since="1.0.0",
)
async def list_hypervisors(call, args) -> ListResult:
    return ListResult("hypervisor", [{"name": h} for h in HYPERVISORS])


# --- physical networks ------------------------------------------------------------------


def physical_network_fields(
    n: PhysicalNetwork, zone: Zone | None, domain: Domain | None = None
) -> dict:
    return {
        "id": n.uuid,
        "name": n.name,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "domainid": domain.uuid if domain else None,
        "state": n.state,
        "isolationmethods": n.isolation_methods,
        "vlan": n.vlan,
        "broadcastdomainrange": n.broadcast_domain_range,
        "networkspeed": n.network_speed,
        "tags": n.tags,
    }


def _check_vlan_ranges(value: str, methods: list[str]) -> str:
    """``100-200,300`` with ids in range for the isolation (VLAN 1-4094, VXLAN 1-16777214)."""
    top = 16_777_214 if "VXLAN" in methods else 4094
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise param_error(f"vlan {value[:80]!r}: {part!r} is not a number or a range a-b")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= low <= high <= top:
            raise param_error(f"vlan {value[:80]!r}: {part.strip()} is not within 1-{top}")
    return ",".join(p.strip().replace(" ", "") for p in value.split(","))


async def _network_answer(session, n: PhysicalNetwork) -> dict:
    domain = await session.get(Domain, n.domain_id) if n.domain_id else None
    return physical_network_fields(n, await session.get(Zone, n.zone_id), domain)


@command(
    "createPhysicalNetwork",
    description="Creates a physical network in a zone, with its VirtualRouter providers",
    params=[
        Param("zoneid", "uuid", required=True),
        Param("name", required=True),
        Param(
            "isolationmethods", "list", choices=ISOLATION_METHODS, description="e.g. VLAN or VXLAN"
        ),
        Param("vlan", description="guest VLAN/VNI ranges, e.g. 100-200,300-400"),
        Param("broadcastdomainrange", choices=("ZONE", "POD"), description="default ZONE"),
        Param("networkspeed", description="e.g. 1G, 10G"),
        Param("tags", "list", description="physical network tags"),
        Param("domainid", "uuid", description="dedicate the network to a domain"),
    ],
    response="physicalnetwork",
    is_async=True,
    creates=True,
    instance_type="PhysicalNetwork",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def create_physical_network(call, args) -> ObjectResult:
    methods = [m.upper() for m in args["isolationmethods"] or []]
    bad = [m for m in methods if m not in ISOLATION_METHODS]
    if bad:
        raise param_error(
            f"isolationmethods: {', '.join(bad)} is not one of {', '.join(ISOLATION_METHODS)}"
        )
    vlan = _check_vlan_ranges(args["vlan"], methods) if args["vlan"] else None
    async with call.server.db.sessions() as session:
        zone = await _live(session, Zone, args["zoneid"], "zone")
        domain = (
            await _live(session, Domain, args["domainid"], "domain") if args["domainid"] else None
        )
        if await _count(
            session,
            PhysicalNetwork,
            PhysicalNetwork.zone_id == zone.id,
            PhysicalNetwork.name == args["name"],
        ):
            raise param_error(
                f"a physical network named {args['name']} exists already in zone {zone.name}"
            )
        network = PhysicalNetwork(
            **new_id(args),
            name=args["name"],
            zone_id=zone.id,
            domain_id=domain.id if domain else None,
            isolation_methods=",".join(methods) or None,
            vlan=vlan,
            broadcast_domain_range=args["broadcastdomainrange"] or "ZONE",
            network_speed=args["networkspeed"],
            tags=_split_tags(args["tags"]),
            state="Disabled",
        )
        session.add(network)
        await session.flush()
        for name, services in PROVIDERS.items():
            session.add(
                ServiceProvider(
                    physical_network_id=network.id,
                    name=name,
                    state="Disabled",
                    services=",".join(services),
                    element_uuid=new_uuid(),
                    element_enabled=False,
                )
            )
        await session.commit()
        await call.server.events.record(
            call, "PHYSICAL.NETWORK.CREATE", f"created physical network {network.name}", network
        )
        return ObjectResult("physicalnetwork", physical_network_fields(network, zone, domain))


@command(
    "listPhysicalNetworks",
    description="Lists physical networks",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("zoneid", "uuid"),
    ],
    list_key="physicalnetwork",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def list_physical_networks(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(PhysicalNetwork).where(PhysicalNetwork.live()).order_by(PhysicalNetwork.id)
        if args["id"]:
            query = query.where(PhysicalNetwork.uuid == args["id"])
        if args["name"]:
            query = query.where(PhysicalNetwork.name == args["name"])
        if args["zoneid"]:
            query = query.where(of_uuid(PhysicalNetwork.zone_id, Zone, args["zoneid"]))
        if args["keyword"]:
            query = query.where(PhysicalNetwork.name.contains(args["keyword"], autoescape=True))
        networks, total = await paged(session, query, args)
        zones = await _by_id(session, Zone, (n.zone_id for n in networks))
        domains = await _by_id(session, Domain, (n.domain_id for n in networks))
        items = [
            physical_network_fields(n, zones.get(n.zone_id), domains.get(n.domain_id))
            for n in networks
        ]
        return ListResult("physicalnetwork", items, total)


@command(
    "updatePhysicalNetwork",
    description="Updates a physical network (state Enabled/Disabled, vlan ranges, speed, tags)",
    params=[
        Param("id", "uuid", required=True),
        Param("state", choices=("Enabled", "Disabled")),
        Param("vlan"),
        Param("networkspeed"),
        Param("tags", "list"),
        Param("removevlan", description="accepted for compatibility"),
    ],
    response="physicalnetwork",
    is_async=True,
    instance_type="PhysicalNetwork",
    resumable=True,
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def update_physical_network(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        network = await _live(session, PhysicalNetwork, args["id"], "physical network")
        if args["vlan"]:
            methods = (network.isolation_methods or "").split(",")
            network.vlan = _check_vlan_ranges(args["vlan"], methods)
        if args["state"]:
            network.state = args["state"]
        if args["networkspeed"]:
            network.network_speed = args["networkspeed"]
        if call.params.has("tags"):
            network.tags = _split_tags(args["tags"])
        await session.commit()
        await call.server.events.record(
            call, "PHYSICAL.NETWORK.UPDATE", f"updated physical network {network.name}", network
        )
        systemvms.kick(call.server.orchestrator)
        return ObjectResult("physicalnetwork", await _network_answer(session, network))


@command(
    "deletePhysicalNetwork",
    description="Deletes a physical network with no public IP ranges, and its traffic types",
    params=[Param("id", "uuid", required=True)],
    is_async=True,
    instance_type="PhysicalNetwork",
    resumable=True,
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def delete_physical_network(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        network = await _live(session, PhysicalNetwork, args["id"], "physical network")
        ranges = await _count(session, VlanIpRange, VlanIpRange.physical_network_id == network.id)
        if ranges:
            raise ApiError(
                536,
                f"physical network {network.name} still has {ranges} public IP "
                "range(s); delete them first",
            )
        now = utcnow()
        for model in (TrafficType, ServiceProvider):
            await session.execute(
                update(model)
                .where(model.physical_network_id == network.id, model.live())
                .values(removed=now)
            )
        network.removed = now
        await session.commit()
        await call.server.events.record(
            call, "PHYSICAL.NETWORK.DELETE", f"deleted physical network {network.name}", network
        )
    return PlainResult({"success": True})


# --- traffic types ------------------------------------------------------------------------


def traffic_type_fields(t: TrafficType, network: PhysicalNetwork | None) -> dict:
    return {
        "id": t.uuid,
        "traffictype": t.traffic_type,
        "physicalnetworkid": network.uuid if network else None,
        "kvmnetworklabel": t.kvm_network_label,
        "vlan": t.vlan,
    }


@command(
    "addTrafficType",
    description="Adds a traffic type (Public, Guest, Management, Storage) to a physical network",
    params=[
        Param("physicalnetworkid", "uuid", required=True),
        Param("traffictype", required=True, choices=TRAFFIC_TYPES),
        Param("kvmnetworklabel", description="the host bridge carrying this traffic"),
        Param("vlan", description="VLAN id (Management and Storage traffic)"),
        Param("isolationmethod", description="accepted for compatibility"),
        Param("xennetworklabel", description="accepted for compatibility"),
        Param("vmwarenetworklabel", description="accepted for compatibility"),
        Param("hypervnetworklabel", description="accepted for compatibility"),
        Param("ovm3networklabel", description="accepted for compatibility"),
    ],
    response="traffictype",
    is_async=True,
    creates=True,
    instance_type="TrafficType",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def add_traffic_type(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        network = await _live(
            session, PhysicalNetwork, args["physicalnetworkid"], "physical network"
        )
        if await _count(
            session,
            TrafficType,
            TrafficType.physical_network_id == network.id,
            TrafficType.traffic_type == args["traffictype"],
        ):
            raise param_error(
                f"physical network {network.name} carries {args['traffictype']} "
                "traffic already (traffictype)"
            )
        traffic = TrafficType(
            **new_id(args),
            physical_network_id=network.id,
            traffic_type=args["traffictype"],
            kvm_network_label=args["kvmnetworklabel"],
            vlan=args["vlan"],
        )
        session.add(traffic)
        await session.commit()
        await call.server.events.record(
            call,
            "TRAFFIC.TYPE.CREATE",
            f"added {traffic.traffic_type} traffic to physical network {network.name}",
            traffic,
        )
        return ObjectResult("traffictype", traffic_type_fields(traffic, network))


@command(
    "listTrafficTypes",
    description="Lists the traffic types of a physical network",
    params=[*PAGING, Param("physicalnetworkid", "uuid", required=True)],
    list_key="traffictype",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def list_traffic_types(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        network = await _live(
            session, PhysicalNetwork, args["physicalnetworkid"], "physical network"
        )
        query = (
            select(TrafficType)
            .where(TrafficType.live(), TrafficType.physical_network_id == network.id)
            .order_by(TrafficType.id)
        )
        rows, total = await paged(session, query, args)
        return ListResult("traffictype", [traffic_type_fields(t, network) for t in rows], total)


@command(
    "deleteTrafficType",
    description="Removes a traffic type from its physical network",
    params=[Param("id", "uuid", required=True)],
    is_async=True,
    instance_type="TrafficType",
    resumable=True,
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def delete_traffic_type(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        traffic = await _live(session, TrafficType, args["id"], "traffic type")
        if traffic.traffic_type == "Public" and await _count(
            session, VlanIpRange, VlanIpRange.physical_network_id == traffic.physical_network_id
        ):
            raise ApiError(
                536,
                "the physical network still has public IP ranges; delete them "
                "before its Public traffic type",
            )
        traffic.remove()
        await session.commit()
        await call.server.events.record(
            call, "TRAFFIC.TYPE.DELETE", f"deleted {traffic.traffic_type} traffic type", traffic
        )
    return PlainResult({"success": True})


# --- network service providers and virtual router elements --------------------------------


def provider_fields(p: ServiceProvider, network: PhysicalNetwork | None) -> dict:
    return {
        "id": p.uuid,
        "name": p.name,
        "physicalnetworkid": network.uuid if network else None,
        "state": p.state,
        "servicelist": [s for s in p.services.split(",") if s],
        "canenableindividualservice": True,
        "destinationphysicalnetworkid": None,
    }


def element_fields(p: ServiceProvider) -> dict:
    return {
        "id": p.element_uuid,
        "nspid": p.uuid,
        "enabled": p.element_enabled,
        "account": "system",
        "domain": "ROOT",
    }


@command(
    "listNetworkServiceProviders",
    description="Lists the network service providers of physical networks",
    params=[
        *PAGING,
        Param("physicalnetworkid", "uuid"),
        Param("name"),
        Param("state", choices=("Enabled", "Disabled", "Shutdown")),
    ],
    list_key="networkserviceprovider",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def list_network_service_providers(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(ServiceProvider).where(ServiceProvider.live()).order_by(ServiceProvider.id)
        if args["physicalnetworkid"]:
            network = await _live(
                session, PhysicalNetwork, args["physicalnetworkid"], "physical network"
            )
            query = query.where(ServiceProvider.physical_network_id == network.id)
        if args["name"]:
            query = query.where(func.lower(ServiceProvider.name) == args["name"].lower())
        if args["state"]:
            query = query.where(ServiceProvider.state == args["state"])
        rows, total = await paged(session, query, args)
        networks = await _by_id(session, PhysicalNetwork, (p.physical_network_id for p in rows))
        items = [provider_fields(p, networks.get(p.physical_network_id)) for p in rows]
        return ListResult("networkserviceprovider", items, total)


@command(
    "updateNetworkServiceProvider",
    description="Enables or disables a network service provider",
    params=[
        Param("id", "uuid", required=True),
        Param("state", choices=("Enabled", "Disabled", "Shutdown")),
        Param("servicelist", "list", description="services the provider offers"),
    ],
    response="networkserviceprovider",
    is_async=True,
    instance_type="PhysicalNetworkServiceProvider",
    resumable=True,
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def update_network_service_provider(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        provider = await _live(session, ServiceProvider, args["id"], "network service provider")
        if args["state"] == "Enabled" and not provider.element_enabled:
            raise param_error(
                f"provider {provider.name} is not ready: enable its virtual router "
                "element first (configureVirtualRouterElement)"
            )
        if args["state"]:
            provider.state = args["state"]
        if args["servicelist"]:
            offered = PROVIDERS.get(provider.name, ())
            bad = [s for s in args["servicelist"] if s not in offered]
            if bad:
                raise param_error(f"servicelist: {provider.name} does not offer {', '.join(bad)}")
            provider.services = ",".join(args["servicelist"])
        await session.commit()
        network = await session.get(PhysicalNetwork, provider.physical_network_id)
        await call.server.events.record(
            call, "SERVICE.PROVIDER.UPDATE", f"updated provider {provider.name}", provider
        )
        return ObjectResult("networkserviceprovider", provider_fields(provider, network))


@command(
    "listVirtualRouterElements",
    description="Lists the virtual router elements of the providers",
    params=[*PAGING, Param("id", "uuid"), Param("nspid", "uuid"), Param("enabled", "boolean")],
    list_key="virtualrouterelement",
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def list_virtual_router_elements(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = (
            select(ServiceProvider)
            .where(ServiceProvider.live(), ServiceProvider.element_uuid.is_not(None))
            .order_by(ServiceProvider.id)
        )
        if args["id"]:
            query = query.where(ServiceProvider.element_uuid == args["id"])
        if args["nspid"]:
            query = query.where(ServiceProvider.uuid == args["nspid"])
        if args["enabled"] is not None:
            query = query.where(ServiceProvider.element_enabled == args["enabled"])
        rows, total = await paged(session, query, args)
        return ListResult("virtualrouterelement", [element_fields(p) for p in rows], total)


@command(
    "configureVirtualRouterElement",
    description="Enables or disables a virtual router element",
    params=[Param("id", "uuid", required=True), Param("enabled", "boolean", required=True)],
    response="virtualrouterelement",
    is_async=True,
    instance_type="VirtualRouterElement",
    resumable=True,
    roles=ROOT_ONLY,
    since="3.0.0",
)
async def configure_virtual_router_element(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        provider = await session.scalar(
            select(ServiceProvider).where(
                ServiceProvider.element_uuid == args["id"], ServiceProvider.live()
            )
        )
        if provider is None:
            raise not_found("virtual router element", args["id"])
        provider.element_enabled = args["enabled"]
        await session.commit()
        await call.server.events.record(
            call,
            "NETWORK.ELEMENT.CONFIGURE",
            f"virtual router element of {provider.name} enabled={args['enabled']}",
            provider,
        )
        return ObjectResult("virtualrouterelement", element_fields(provider))


# --- public IP ranges ---------------------------------------------------------------------


def _vlan_tag(value: str | None) -> str:
    """``100``, ``vlan://100`` or ``untagged`` -> ``vlan://100`` / ``vlan://untagged``."""
    raw = (value or "untagged").strip()
    tag = raw[len("vlan://") :] if raw.lower().startswith("vlan://") else raw
    if tag.lower() == "untagged":
        return "vlan://untagged"
    if not tag.isdigit() or not 1 <= int(tag) <= 4094:
        raise param_error(f"vlan {raw[:60]!r} is not untagged or a VLAN id 1-4094")
    return f"vlan://{int(tag)}"


def vlan_fields(
    r: VlanIpRange, zone: Zone | None, network: PhysicalNetwork | None, pod: Pod | None = None
) -> dict:
    subnet = ipaddress.IPv4Network(f"{r.gateway}/{r.netmask}", strict=False)
    return {
        "id": r.uuid,
        "forvirtualnetwork": r.for_virtual_network,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "vlan": r.vlan,
        "gateway": r.gateway,
        "netmask": r.netmask,
        "cidr": str(subnet),
        "startip": r.start_ip,
        "endip": r.end_ip,
        "physicalnetworkid": network.uuid if network else None,
        "podid": pod.uuid if pod else None,
        "podname": pod.name if pod else None,
        "forsystemvms": False,
    }


async def _public_network(session, zone: Zone, uuid: str | None) -> PhysicalNetwork:
    if uuid:
        network = await _live(session, PhysicalNetwork, uuid, "physical network")
        if network.zone_id != zone.id:
            raise param_error(
                f"physical network {network.name} (physicalnetworkid) is not in zone {zone.name}"
            )
        return network
    network = await session.scalar(
        select(PhysicalNetwork)
        .join(TrafficType, TrafficType.physical_network_id == PhysicalNetwork.id)
        .where(
            PhysicalNetwork.zone_id == zone.id,
            PhysicalNetwork.live(),
            TrafficType.live(),
            TrafficType.traffic_type == "Public",
        )
        .order_by(PhysicalNetwork.id)
    )
    if network is None:
        raise param_error(
            f"zone {zone.name} has no physical network carrying Public traffic; "
            "add one or pass physicalnetworkid"
        )
    return network


async def _insert_addresses(
    session, zone_id: int, range_id: int, first: ipaddress.IPv4Address, size: int
) -> None:
    """One public_ips row per address, in bulk: PostgreSQL makes the rows itself
    (generate_series; a /16 in well under a second), SQLite takes one executemany."""
    now = utcnow()
    if session.bind.dialect.name == "postgresql":
        await session.execute(
            text(
                "INSERT INTO public_ips (uuid, created, address, zone_id, vlan_range_id, state) "
                "SELECT gen_random_uuid()::text, :now, host(CAST(:first AS inet) + n), :zone, "
                ":range, 'Free' FROM generate_series(0, CAST(:last AS bigint)) AS n"
            ).bindparams(bindparam("now", type_=UTCDateTime())),
            {"now": now, "first": str(first), "zone": zone_id, "range": range_id, "last": size - 1},
        )
        return
    start = int(first)
    rows = [
        {
            "uuid": new_uuid(),
            "created": now,
            "address": str(ipaddress.IPv4Address(n)),
            "zone_id": zone_id,
            "vlan_range_id": range_id,
            "state": "Free",
        }
        for n in range(start, start + size)
    ]
    await session.execute(insert(PublicIp.__table__), rows)


@command(
    "createVlanIpRange",
    description="Adds a range of public IP addresses to a zone",
    params=[
        Param("zoneid", "uuid", description="the zone (default: the physical network's)"),
        Param("vlan", description="VLAN id or untagged (default untagged)"),
        Param("gateway", required=True),
        Param("netmask", required=True),
        Param("startip", required=True),
        Param("endip", description="last address (default startip)"),
        Param("forvirtualnetwork", "boolean", description="public (true, the default)"),
        Param(
            "physicalnetworkid",
            "uuid",
            description="default: the zone's physical network carrying Public traffic",
        ),
        Param("podid", "uuid", description="accepted; ranges are zone-wide"),
        Param("forsystemvms", "boolean", description="accepted for compatibility"),
    ],
    response="vlan",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def create_vlan_ip_range(call, args) -> ObjectResult:
    if args["forvirtualnetwork"] is False:
        raise param_error("forvirtualnetwork=false (direct networks) is not supported")
    subnet = _subnet(args["gateway"], args["netmask"])
    first, last = _check_range(subnet, args["startip"], args["endip"] or args["startip"])
    assert first is not None and last is not None
    size = int(last) - int(first) + 1
    if size > MAX_RANGE:
        raise param_error(
            f"endip {last}: a range holds at most {MAX_RANGE} addresses (a /16); "
            f"{first}-{last} has {size}"
        )
    gateway = ipaddress.IPv4Address(args["gateway"])
    if first <= gateway <= last:
        raise param_error(f"gateway {gateway} lies inside the range {first}-{last}")
    vlan = _vlan_tag(args["vlan"])
    async with call.server.db.sessions() as session:
        if args["zoneid"]:
            zone = await _live(session, Zone, args["zoneid"], "zone")
        elif args["physicalnetworkid"]:
            net = await _live(
                session, PhysicalNetwork, args["physicalnetworkid"], "physical network"
            )
            zone = await session.get_one(Zone, net.zone_id)
        else:
            raise param_error("missing parameter zoneid (or physicalnetworkid)")
        network = await _public_network(session, zone, args["physicalnetworkid"])
        for other in await session.scalars(
            select(VlanIpRange).where(VlanIpRange.zone_id == zone.id, VlanIpRange.live())
        ):
            low = ipaddress.IPv4Address(other.start_ip)
            high = ipaddress.IPv4Address(other.end_ip)
            if first <= high and low <= last:
                raise param_error(
                    f"startip-endip {first}-{last} overlaps the public IP range "
                    f"{other.start_ip}-{other.end_ip} (id {other.uuid}) in zone {zone.name}"
                )
        ip_range = VlanIpRange(
            zone_id=zone.id,
            physical_network_id=network.id,
            vlan=vlan,
            gateway=args["gateway"],
            netmask=args["netmask"],
            start_ip=str(first),
            end_ip=str(last),
            for_virtual_network=True,
        )
        session.add(ip_range)
        await session.flush()
        try:
            await _insert_addresses(session, zone.id, ip_range.id, first, size)
            await session.commit()
        except IntegrityError:  # a range created at the same moment took some addresses
            await session.rollback()
            raise param_error(
                f"startip-endip {first}-{last} overlaps a public IP range "
                f"created at the same time in zone {zone.name}"
            ) from None
        await call.server.events.record(
            call, "VLAN.IP.RANGE.CREATE", f"created public IP range {first}-{last}", ip_range
        )
        systemvms.kick(call.server.orchestrator)
        return ObjectResult("vlan", vlan_fields(ip_range, zone, network))


@command(
    "listVlanIpRanges",
    description="Lists public IP ranges",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("zoneid", "uuid"),
        Param("podid", "uuid"),
        Param("physicalnetworkid", "uuid"),
        Param("vlan"),
        Param("forvirtualnetwork", "boolean"),
        Param("networkid", "uuid", description="accepted; no range belongs to a network yet"),
    ],
    list_key="vlaniprange",
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def list_vlan_ip_ranges(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(VlanIpRange).where(VlanIpRange.live()).order_by(VlanIpRange.id)
        if args["id"]:
            query = query.where(VlanIpRange.uuid == args["id"])
        if args["zoneid"]:
            query = query.where(of_uuid(VlanIpRange.zone_id, Zone, args["zoneid"]))
        if args["podid"]:
            query = query.where(of_uuid(VlanIpRange.pod_id, Pod, args["podid"]))
        if args["physicalnetworkid"]:
            query = query.where(
                of_uuid(VlanIpRange.physical_network_id, PhysicalNetwork, args["physicalnetworkid"])
            )
        if args["vlan"]:
            query = query.where(VlanIpRange.vlan == _vlan_tag(args["vlan"]))
        if args["forvirtualnetwork"] is not None:
            query = query.where(VlanIpRange.for_virtual_network == args["forvirtualnetwork"])
        if args["networkid"]:
            query = query.where(VlanIpRange.id.is_(None))
        if args["keyword"]:
            query = query.where(VlanIpRange.start_ip.contains(args["keyword"], autoescape=True))
        ranges, total = await paged(session, query, args)
        zones = await _by_id(session, Zone, (r.zone_id for r in ranges))
        networks = await _by_id(session, PhysicalNetwork, (r.physical_network_id for r in ranges))
        pods = await _by_id(session, Pod, (r.pod_id for r in ranges))
        items = [
            vlan_fields(
                r, zones.get(r.zone_id), networks.get(r.physical_network_id), pods.get(r.pod_id)
            )
            for r in ranges
        ]
        return ListResult("vlaniprange", items, total)


@command(
    "deleteVlanIpRange",
    description="Deletes a public IP range none of whose addresses is allocated",
    params=[Param("id", "uuid", required=True)],
    roles=ROOT_ONLY,
    since="1.0.0",
)
async def delete_vlan_ip_range(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        ip_range = await _live(session, VlanIpRange, args["id"], "vlan range")
        now = utcnow()
        # Free addresses go first, in one statement; an allocated one keeps the range.
        await session.execute(
            update(PublicIp)
            .where(PublicIp.vlan_range_id == ip_range.id, PublicIp.live(), PublicIp.state == "Free")
            .values(removed=now)
        )
        allocated = await _count(session, PublicIp, PublicIp.vlan_range_id == ip_range.id)
        if allocated:
            text = (
                f"{allocated} address(es) of the range {ip_range.start_ip}-"
                f"{ip_range.end_ip} are allocated; release them first"
            )
            await session.rollback()
            raise ApiError(536, text)
        ip_range.removed = now
        await session.commit()
        await call.server.events.record(
            call,
            "VLAN.IP.RANGE.DELETE",
            f"deleted public IP range {ip_range.start_ip}-{ip_range.end_ip}",
            ip_range,
        )
    return PlainResult({"success": True})


async def zone_contents(session, zone_id: int) -> list[str]:
    """What keeps a zone from being deleted: ``["2 pod(s)", ...]``."""
    found = []
    for model, what in (
        (Pod, "pod"),
        (PhysicalNetwork, "physical network"),
        (VlanIpRange, "public IP range"),
        (Network, "guest network"),
    ):
        n = await _count(session, model, model.zone_id == zone_id)
        if n:
            found.append(f"{n} {what}(s)")
    return found
