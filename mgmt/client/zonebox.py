"""A zone in a box, built through the API as an operator would: zone, physical
network, pod, cluster, the local ``netns`` host, the public range, a template.

Used by ``make demo`` and by the orchestration tests; every step is one
CloudStack API call through the ``cs`` client, so what works here works for
any client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PUBLIC_GATEWAY = "203.0.113.1"
PUBLIC_NETMASK = "255.255.255.0"
PUBLIC_RANGE = ("203.0.113.10", "203.0.113.99")
ISOLATED_OFFERING = "DefaultIsolatedNetworkOfferingWithSourceNatService"


@dataclass
class Zone:
    zone: dict
    pod: dict
    cluster: dict
    host: dict
    template: dict
    offering: dict
    network_offering: dict


def build_zone(api: Any, lab: str, *, name: str = "zone1",
               say: Callable[[str], None] = lambda _m: None,
               host_url: str | None = None) -> Zone:
    """Create everything a tenant needs to deploy instances; ``api`` is a cs client.

    The host is ``netns://<lab>``: the namespace fabric named like a lab on this
    machine, whose Internet namespace answers at 203.0.113.1. ``host_url``
    ``qemu://<lab>?image=...`` makes it a KVM host whose routers are qemu VMs on the
    same fabric (mgmt.orchestration.hosts.qemu).
    """
    url = host_url or f"netns://{lab}"
    hypervisor = "KVM" if url.startswith("qemu://") else "Netns"
    zone = api.createZone(name=name, networktype="Advanced", dns1=PUBLIC_GATEWAY,
                          internaldns1=PUBLIC_GATEWAY, guestcidraddress="10.1.1.0/24",
                          allocationstate="Enabled")["zone"]
    say(f"zone {zone['name']}")
    phys = api.createPhysicalNetwork(zoneid=zone["id"], name=f"{name}-phys",
                                     isolationmethods="VXLAN")["physicalnetwork"]
    for traffic in ("Public", "Guest"):
        api.addTrafficType(physicalnetworkid=phys["id"], traffictype=traffic)
    api.updatePhysicalNetwork(id=phys["id"], state="Enabled")
    pod = api.createPod(zoneid=zone["id"], name=f"{name}-pod", gateway="172.31.0.1",
                        netmask="255.255.255.0", startip="172.31.0.10",
                        endip="172.31.0.20")["pod"]
    cluster = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername=f"{name}-cl",
                             clustertype="CloudManaged", hypervisor=hypervisor)["cluster"][0]
    say(f"host {url} ({'namespaces' if hypervisor == 'Netns' else 'VMs'} on this machine)")
    host = api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"],
                       hypervisor=hypervisor, url=url)["host"][0]
    api.createVlanIpRange(zoneid=zone["id"], physicalnetworkid=phys["id"],
                          gateway=PUBLIC_GATEWAY, netmask=PUBLIC_NETMASK,
                          startip=PUBLIC_RANGE[0], endip=PUBLIC_RANGE[1],
                          forvirtualnetwork="true")
    say(f"public addresses {PUBLIC_RANGE[0]}-{PUBLIC_RANGE[1]}")
    ostype = api.listOsTypes(description="Debian GNU/Linux 12 (64-bit)")["ostype"][0]["id"]
    template = api.registerTemplate(name="lab-instance", displaytext="lab instance: HTTP "
                                    "server and DHCP client in a namespace",
                                    url="http://203.0.113.1/lab-instance.qcow2",
                                    format="QCOW2", hypervisor="KVM", ostypeid=ostype,
                                    zoneid=zone["id"], ispublic="true")["template"][0]
    [offering] = [o for o in api.listServiceOfferings()["serviceoffering"]
                  if o["name"] == "Small Instance"] or api.listServiceOfferings()[
        "serviceoffering"][:1]
    [network_offering] = api.listNetworkOfferings(name=ISOLATED_OFFERING)["networkoffering"]
    return Zone(zone, pod, cluster, host, template, offering, network_offering)
