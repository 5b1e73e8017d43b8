"""A live management server with a zone in a box, for the orchestration tests.

``Cloud`` starts the server (SQLite in a temporary home), builds the zone
through the API with the ``cs`` client (mgmt.client.zonebox) on a netns host
named like a lab, and removes the whole fabric at the end. Calls go through
the real client in a worker thread, as any CloudStack client would make them.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from cs.client import CloudStack

from appliances.lab.lab import Lab
from appliances.lab.netns import run
from mgmt.client.zonebox import Zone, build_zone
from mgmt.server.app import ManagementServer, Settings


class Cloud:
    """``host_url``: the zone's host (default netns://<lab>; e.g. qemu://<lab>?image=...)."""

    def __init__(self, lab: str, home: Path, host_url: str | None = None):
        self.lab = lab
        self.home = home
        self.host_url = host_url
        self.server: ManagementServer | None = None
        self.api: CloudStack | None = None
        self.zone: Zone | None = None

    async def start(self) -> Cloud:
        await Lab(self.lab).down(quiet=True)
        self.server = ManagementServer(Settings(home=self.home, port=0))
        await self.server.open()
        [url] = await self.server.listen()
        admin = self.server.admin
        self.api = CloudStack(url, key=admin.apikey, secret=admin.secretkey, fetch_result=True,
                              poll_interval=0.05, timeout=60, job_timeout=300)
        self.zone = await asyncio.to_thread(build_zone, self.api, self.lab,
                                            host_url=self.host_url)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
        await Lab(self.lab).down(quiet=True)

    async def call(self, command: str, /, **params: Any) -> dict:
        return await asyncio.to_thread(getattr(self.api, command), **params)

    async def network(self, name: str = "net1", offering: str | None = None) -> dict:
        """A network of the zone box's isolated offering, or of the offering named."""
        assert self.zone is not None
        offering_id = self.zone.network_offering["id"]
        if offering is not None:
            [found] = (await self.call("listNetworkOfferings", name=offering))["networkoffering"]
            offering_id = found["id"]
        return (await self.call("createNetwork", name=name, displaytext=name,
                                zoneid=self.zone.zone["id"],
                                networkofferingid=offering_id))["network"]

    async def deploy(self, network: dict, name: str) -> dict:
        assert self.zone is not None
        return (await self.call("deployVirtualMachine", zoneid=self.zone.zone["id"],
                                serviceofferingid=self.zone.offering["id"],
                                templateid=self.zone.template["id"],
                                networkids=network["id"], name=name))["virtualmachine"]

    def ns(self, role: str) -> str:
        return f"skf-{self.lab}-{role}"

    async def curl(self, url: str, role: str = "internet", timeout: float = 3) -> str | None:
        """The body a GET from a lab namespace returns, or None if nothing answered."""
        res = await run(["ip", "netns", "exec", self.ns(role), "curl", "-s", "--max-time",
                         str(timeout), url], check=False, timeout=timeout + 5)
        return res.stdout if res.ok else None

    async def lease(self, vm: dict) -> dict[str, str]:
        driver = self.driver()
        return await driver.lease(vm["instancename"])

    def driver(self):
        from mgmt.orchestration.hosts.netns import NetnsHostDriver

        return NetnsHostDriver(self.lab)


@contextlib.asynccontextmanager
async def cloud(lab: str, home: Path, host_url: str | None = None):
    c = Cloud(lab, home, host_url)
    try:
        yield await c.start()
    finally:
        await c.stop()
