"""A zone written straight into the database for tests that need its rows, not its
API: zone, pod, cluster, one netns host, a public range and its addresses (all
Allocated, for system VMs to take)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mgmt.db.models import Zone
from mgmt.db.models.infra import Cluster, Host, Pod, PublicIp, VlanIpRange


@dataclass
class ZoneRows:
    zone: Zone
    pod: Pod
    cluster: Cluster
    host: Host
    public_range: VlanIpRange
    ips: list[PublicIp]


async def zone_rows(
    session, *, zone: Zone, host_name: str, host_url: str, first_ip: str, count: int = 2
) -> ZoneRows:
    """``zone`` (unsaved) and the rest under it; ``count`` public addresses from
    ``first_ip`` on."""
    session.add(zone)
    await session.flush()
    pod = Pod(name="p", zone_id=zone.id, gateway="172.31.0.1", netmask="255.255.255.0")
    session.add(pod)
    await session.flush()
    cluster = Cluster(name="c", zone_id=zone.id, pod_id=pod.id, hypervisor="Netns")
    session.add(cluster)
    await session.flush()
    host = Host(
        name=host_name,
        zone_id=zone.id,
        pod_id=pod.id,
        cluster_id=cluster.id,
        url=host_url,
        hypervisor="Netns",
        ip_address="127.0.0.1",
    )
    first = ipaddress.IPv4Address(first_ip)
    rng = VlanIpRange(
        zone_id=zone.id,
        gateway="203.0.113.1",
        netmask="255.255.255.0",
        start_ip=str(first),
        end_ip=str(first + count - 1),
    )
    session.add_all([host, rng])
    await session.flush()
    ips = [
        PublicIp(address=str(first + k), zone_id=zone.id, vlan_range_id=rng.id, state="Allocated")
        for k in range(count)
    ]
    session.add_all(ips)
    await session.flush()
    return ZoneRows(zone, pod, cluster, host, rng, ips)
