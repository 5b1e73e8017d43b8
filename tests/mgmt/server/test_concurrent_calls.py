"""Many clients at once: more concurrent calls than the database pool has connections.

A command that records its event while its own session still holds a pooled
connection needs a second one; with every connection held that way the calls
used to wait for each other until the pool's timeout and then all failed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import requests
from cs.client import CloudStack
from requests.adapters import HTTPAdapter

CLIENTS = 40  # more than the pool's connections (SQLite 10 + 10, PostgreSQL 5 + 10)
DEFAULT = "DefaultIsolatedNetworkOfferingWithSourceNatService"


async def test_more_concurrent_creates_than_pooled_connections(live):
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=CLIENTS))
    admin = CloudStack(
        live.url,
        key=live.admin.apikey,
        secret=live.admin.secretkey,
        fetch_result=True,
        timeout=120,
        session=session,
    )
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(CLIENTS) as pool:

        def call(command: str, **params):
            return loop.run_in_executor(pool, lambda: getattr(admin, command)(**params))

        zone = (
            await call(
                "createZone",
                name="z1",
                networktype="Advanced",
                allocationstate="Enabled",
                guestcidraddress="10.20.0.0/16",
            )
        )["zone"]
        [offering] = (await call("listNetworkOfferings", name=DEFAULT))["networkoffering"]
        made = await asyncio.gather(
            *(
                call(
                    "createNetwork",
                    name=f"n{k}",
                    zoneid=zone["id"],
                    networkofferingid=offering["id"],
                )
                for k in range(CLIENTS)
            )
        )
        assert sorted(m["network"]["name"] for m in made) == sorted(f"n{k}" for k in range(CLIENTS))
        events = await call("listEvents", type="NETWORK.CREATE", listall=True, pagesize=500)
        assert events["count"] == CLIENTS
