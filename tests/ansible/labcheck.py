"""The check a deployed lab must pass, driven with the ``cs`` client as a user would:
an isolated network, an instance in it, a public address with a port forward to the
instance's web server, and the page fetched through it from the lab's Internet."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from cs.client import CloudStack

OFFERING = "DefaultIsolatedNetworkOfferingWithSourceNatService"
PUBLIC_PORT = 8080


@dataclass
class Page:
    url: str
    body: str
    instance: str


def fetch(lab: str, url: str, timeout: float = 3.0) -> str | None:
    """GET ``url`` from the lab's Internet namespace; None when nothing answered."""
    res = subprocess.run(
        ["ip", "netns", "exec", f"skf-{lab}-internet", "curl", "-sf", "--max-time",
         str(timeout), url], capture_output=True, text=True, check=False,
        timeout=timeout + 10)
    return res.stdout if res.returncode == 0 else None


def first_page(api_url: str, key: str, secret: str, lab: str, *, zone: str = "zone1",
               template: str = "lab-instance", name: str = "check",
               wait: float = 120.0) -> Page:
    """Build the network, instance and forward in ``zone``; the page through it."""
    api = CloudStack(api_url, key=key, secret=secret, fetch_result=True,
                     poll_interval=0.2, timeout=120)
    [z] = api.listZones(name=zone)["zone"]
    [offering] = api.listNetworkOfferings(name=OFFERING)["networkoffering"]
    [tpl] = api.listTemplates(templatefilter="all", name=template, zoneid=z["id"])["template"]
    service = api.listServiceOfferings()["serviceoffering"][0]
    net = api.createNetwork(name=f"{name}-net", displaytext=f"{name} network",
                            zoneid=z["id"], networkofferingid=offering["id"])["network"]
    vm = api.deployVirtualMachine(zoneid=z["id"], serviceofferingid=service["id"],
                                  templateid=tpl["id"], networkids=net["id"],
                                  name=name)["virtualmachine"]
    ip = api.associateIpAddress(networkid=net["id"])["ipaddress"]
    api.createPortForwardingRule(ipaddressid=ip["id"], protocol="tcp", publicport=PUBLIC_PORT,
                                 privateport=80, virtualmachineid=vm["id"])
    url = f"http://{ip['ipaddress']}:{PUBLIC_PORT}/"
    deadline = time.monotonic() + wait
    while True:
        body = fetch(lab, url)
        if body or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return Page(url, body or "", vm["name"])
