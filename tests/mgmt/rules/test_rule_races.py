"""Two servers on one database adding clashing rules at once: the conflict check and
the insert are one step per public IP, so exactly one of the clashing rules wins."""

from __future__ import annotations

import asyncio

from cs.client import CloudStack, CloudStackApiException
from rules_world import call

from mgmt.server.app import ManagementServer, Settings

ATTEMPTS = 8


async def test_clashing_forwards_through_two_servers_leave_exactly_one(world, tmp_path):
    live = world["server"]
    other = ManagementServer(Settings(home=tmp_path / "second", port=0, db=live.db_url))
    await other.open()
    [other_url] = await other.listen()
    alice = world["alice"]
    try:
        clients = [
            CloudStack(
                url, key=alice.key, secret=alice.secret, poll_interval=0.05, fetch_result=True
            )
            for url in (live.url, other_url)
            for _ in range(ATTEMPTS // 2)
        ]

        async def forward(client: CloudStack, k: int) -> str:
            try:
                await call(
                    client,
                    "createPortForwardingRule",
                    ipaddressid=world["ips"][1],
                    protocol="tcp",
                    publicport=8080,
                    privateport=80,
                    virtualmachineid=world["vms"][k % 2],
                )
            except CloudStackApiException as exc:
                return f"{exc.error['errorcode']} {exc.error['errortext']}"
            return "created"

        outcomes = await asyncio.gather(*(forward(c, k) for k, c in enumerate(clients)))
    finally:
        await other.close()
    assert outcomes.count("created") == 1, outcomes
    assert all(o.startswith("537 ") and "overlap" in o for o in outcomes if o != "created")
    rules = (
        await call(
            world["admin"], "listPortForwardingRules", listall="true", ipaddressid=world["ips"][1]
        )
    ).get("portforwardingrule", [])
    assert len(rules) == 1, rules
