"""Two live management servers on one PostgreSQL database, one zone, one lab fabric.

Both are ``skiff mgmt serve`` processes (tests/e2e/orchestration.py), each with
its own port and its own reconcile loop; the test's clients split their calls
between them. What issue 5 asks of several servers, seen from outside:

- concurrent rule jobs on one router, from both servers, all succeed and each rule
  is in the database once, in the router's applied document once, and carries
  traffic (the per-router lease orders the pushes);
- concurrent associateIpAddress calls on a new network never hand out an address
  twice, also when the two servers race for the same address, and implement the
  network once (one router, one source-NAT address);
- a router destroyed behind their backs is replaced exactly once, though both
  reconcile loops see it die;
- a server stopped (SIGTERM) in the middle of rule jobs leaves nothing locked:
  the other server's jobs finish and the next change applies;
- a zone whose hosts are full answers deployVirtualMachine with 533.

The tests run in order on one zone (the fabric takes a few seconds to build).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import signal
from dataclasses import dataclass

import pytest
import pytest_asyncio
from cs.client import CloudStackApiException
from e2e_traffic import until
from orchestration import Cloud, ServerProcess, cloud
from sqlalchemy import func, select

from appliances.agent import tls
from appliances.lab.agentclient import AgentClient
from mgmt.db.engine import Database, open_database
from mgmt.db.models.compute import Router, VmInstance
from mgmt.db.models.core import AsyncJob
from mgmt.db.models.infra import PublicIp
from mgmt.db.models.networks import Network
from mgmt.db.models.rules import FirewallRule
from mgmt.db.testing_pg import new_database
from mgmt.orchestration.hosts.runtime import AGENT_PORT

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "duo"
CONCURRENT = 20


@dataclass
class World:
    cloud: Cloud
    one: ServerProcess  # the first server (cloud.call goes to it)
    two: ServerProcess
    network: dict
    vm: dict
    db: Database  # the test's own view of the shared database
    network_id: int

    def repushes(self) -> list[str]:
        """Log lines of documents pushed again for drift: nothing in these tests drifts,
        so each would be a document applied twice."""
        return [line for server in self.servers if server.log.exists()
                for line in server.log.read_text().splitlines() if "drifted" in line]

    @property
    def servers(self) -> tuple[ServerProcess, ServerProcess]:
        return self.one, self.two

    async def split(self, command: str, calls: list[dict]) -> list[dict]:
        """Make the calls at once, alternating between the servers."""
        servers = itertools.cycle(self.servers)
        return list(await asyncio.gather(
            *(next(servers).call(command, **params) for params in calls)))

    async def router(self) -> tuple[Router, VmInstance]:
        """The network's one live router."""
        async with self.db.sessions() as session:
            [(router, vm)] = (await session.execute(
                select(Router, VmInstance).join(VmInstance, VmInstance.id == Router.vm_id)
                .where(Router.network_id == self.network_id, Router.live(),
                       VmInstance.live()))).all()
            return router, vm

    async def applied_document(self) -> dict:
        """What the router's agent applied last, asked over mutual TLS as a server asks."""
        router, vm = await self.router()
        pki = self.one.home / "pki"
        context = tls.client_context(pki / "ca.pem", pki / "mgmt-client.pem",
                                     pki / "mgmt-client.key")
        agent = AgentClient(f"https://{router.control_ip}:{AGENT_PORT}", vm.name, context,
                            timeout=10)
        reply = await agent.request("GET", "/v1/config")
        assert reply.ok, reply
        return reply.body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory, pg_cluster):
    # 20 concurrent clients are 20 threads (the default pool has cores + 4).
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(CONCURRENT + 8))
    url = await new_database(pg_cluster)  # empty: the first server migrates it
    home = tmp_path_factory.mktemp("mgmt")
    async with cloud(LAB, home / "one", url, processes=True) as c:
        two = await c.add_server(home / "two")
        network = await c.network("web")
        vm = await c.deploy(network, "web1")
        db = await open_database(url, migrate=False)
        try:
            async with db.sessions() as session:
                network_id = await session.scalar(
                    select(Network.id).where(Network.uuid == network["id"]))
            yield World(c, c.servers[0], two, network, vm, db, network_id)
        finally:
            await db.close()


async def _public_ip(w: World) -> dict:
    return (await w.cloud.call("associateIpAddress", networkid=w.network["id"]))["ipaddress"]


def _forward(ip: dict, vm: dict, port: int) -> dict:
    return {"ipaddressid": ip["id"], "protocol": "tcp", "publicport": port, "privateport": 80,
            "virtualmachineid": vm["id"]}


async def _answers(w: World, ip: str, ports) -> list[str | None]:
    bodies = await asyncio.gather(*(w.cloud.curl(f"http://{ip}:{p}/") for p in ports))
    return [b.split()[0] if b else None for b in bodies]


async def test_concurrent_rules_on_both_servers_are_each_applied_once(world):
    w = world
    ip = await _public_ip(w)
    ports = list(range(8001, 8001 + CONCURRENT))
    answers = await w.split("createPortForwardingRule", [_forward(ip, w.vm, p) for p in ports])
    assert [a["portforwardingrule"]["state"] for a in answers] == ["Active"] * CONCURRENT
    listed = (await w.cloud.call("listPortForwardingRules",
                                 ipaddressid=ip["id"]))["portforwardingrule"]
    assert sorted(int(r["publicport"]) for r in listed) == ports
    async with w.db.sessions() as session:
        rows = (await session.execute(
            select(FirewallRule.purpose, FirewallRule.start_port, FirewallRule.state)
            .join(PublicIp, PublicIp.id == FirewallRule.ip_address_id)
            .where(PublicIp.address == ip["ipaddress"], FirewallRule.removed.is_(None)))).all()
    assert sorted(rows) == sorted([("Firewall", p, "Active") for p in ports]
                                  + [("PortForwarding", p, "Active") for p in ports])
    document = await w.applied_document()
    forwards = [f["public_start"] for f in document["port_forwards"]
                if f["public_ip"] == ip["ipaddress"]]
    assert sorted(forwards) == ports
    router, _ = await w.router()
    assert document["generation"] == router.applied_generation
    assert router.lock_owner is None
    assert await _answers(w, ip["ipaddress"], ports) == ["web1"] * CONCURRENT
    assert w.repushes() == []


async def test_concurrent_addresses_are_never_handed_out_twice(world):
    w = world
    fresh = await w.cloud.network("fresh")  # not implemented: the calls race to implement it
    async with w.db.sessions() as session:
        fresh_id = await session.scalar(select(Network.id).where(Network.uuid == fresh["id"]))
    first = [a["ipaddress"] for a in await w.split(
        "associateIpAddress", [{"networkid": fresh["id"]}] * CONCURRENT)]
    addresses = [a["ipaddress"] for a in first]
    assert len(set(addresses)) == CONCURRENT
    assert len({a["id"] for a in first}) == CONCURRENT
    async with w.db.sessions() as session:
        owners = dict((await session.execute(
            select(PublicIp.address, PublicIp.network_id)
            .where(PublicIp.address.in_(addresses), PublicIp.state == "Allocated"))).all())
        source_nat = (await session.scalars(select(PublicIp.address).where(
            PublicIp.network_id == fresh_id, PublicIp.source_nat.is_(True),
            PublicIp.state == "Allocated"))).all()
    assert owners == {a: fresh_id for a in addresses}
    assert len(source_nat) == 1 and source_nat[0] not in addresses
    [router] = (await w.cloud.call("listRouters", networkid=fresh["id"]))["router"]
    assert router["state"] == "Running" and router["publicip"] == source_nat[0]
    # Give them back, then both servers race for each of them by name: one of
    # each pair gets it, the other is told it is not free.
    await w.split("disassociateIpAddress", [{"id": a["id"]} for a in first])
    wanted = addresses[: CONCURRENT // 2]
    calls = [{"networkid": fresh["id"], "ipaddress": a} for a in wanted for _ in (1, 2)]
    outcomes = await asyncio.gather(
        *(server.call("associateIpAddress", **params)
          for server, params in zip(itertools.cycle(w.servers), calls, strict=False)),
        return_exceptions=True)
    won = [o["ipaddress"]["ipaddress"] for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if not isinstance(o, dict)]
    assert sorted(won) == sorted(wanted)
    assert all(isinstance(e, CloudStackApiException) and e.error["errorcode"] == 431
               for e in lost), lost
    async with w.db.sessions() as session:  # the other half are free for anyone again
        free = set((await session.scalars(select(PublicIp.address).where(
            PublicIp.address.in_(addresses[CONCURRENT // 2:]),
            PublicIp.state == "Free"))).all())
    assert free == set(addresses[CONCURRENT // 2:])
    assert w.repushes() == []


async def _recreate_events(w: World) -> list[dict]:
    return (await w.cloud.call("listEvents", type="ROUTER.RECREATE", listall="true")).get(
        "event", [])


async def test_a_destroyed_router_is_replaced_once_by_two_reconcile_loops(world):
    w = world
    ip = await _public_ip(w)
    await w.cloud.call("createPortForwardingRule", **_forward(ip, w.vm, 8100))
    url = f"http://{ip['ipaddress']}:8100/"
    assert (await w.cloud.curl(url) or "").startswith("web1")
    [before] = (await w.cloud.call("listRouters", networkid=w.network["id"]))["router"]
    await w.cloud.driver().runtime.stop(before["name"])  # kill it, delete its namespace
    body = await until(lambda: w.cloud.curl(url, timeout=1), lambda got: got, timeout=60)
    assert body.split()[0] == "web1"
    events = await until(lambda: _recreate_events(w), lambda got: got, timeout=30)
    assert [before["name"] in e["description"] for e in events] == [True]
    [after] = (await w.cloud.call("listRouters", networkid=w.network["id"]))["router"]
    assert after["id"] != before["id"] and after["state"] == "Running"
    async with w.db.sessions() as session:
        live = await session.scalar(
            select(func.count()).select_from(Router).where(
                Router.network_id == w.network_id, Router.removed.is_(None)))
    assert live == 1


async def _job_result(w: World, job_id: str) -> dict:
    """The finished job, asked of the first server (the second may be gone)."""
    api = w.one.api()
    api.fetch_result = False  # the job's status, not its result or its error raised
    return await until(lambda: asyncio.to_thread(api.queryAsyncJobResult, jobid=job_id),
                       lambda got: got["jobstatus"] != 0, timeout=120)


async def test_a_server_stopped_amid_rule_jobs_leaves_nothing_locked(world):
    w = world
    ip = await _public_ip(w)
    ports = list(range(9001, 9013))
    mine = ports[:4]  # the second server's: it is stopped while they run
    theirs = ports[4:]

    async def submit(server: ServerProcess, port: int) -> str:
        api = server.api()
        api.fetch_result = False
        answer = await asyncio.to_thread(api.createPortForwardingRule,
                                         **_forward(ip, w.vm, port))
        return answer["jobid"]

    two_pid = w.two.proc.pid
    jobs = [await submit(w.two, p) for p in mine]
    batch = asyncio.gather(*(w.one.call("createPortForwardingRule", **_forward(ip, w.vm, p))
                             for p in theirs))
    assert await w.two.stop(signal.SIGTERM) == 0
    answers = await batch
    assert [a["portforwardingrule"]["state"] for a in answers] == ["Active"] * len(theirs)
    results = [await _job_result(w, job) for job in jobs]
    assert [r["jobstatus"] for r in results] == [1] * len(mine), results
    stopped = f"%-{two_pid}-%"  # its owner id: <hostname>-<pid>-<random>
    async with w.db.sessions() as session:
        held = (await session.execute(select(Router.id, Router.lock_owner, Router.lock_expires)
                                      .where(Router.lock_owner.is_not(None)))).all()
        pending = await session.scalar(select(func.count()).select_from(AsyncJob).where(
            AsyncJob.status == 0, AsyncJob.owner.like(stopped)))
    assert [h for h in held if f"-{two_pid}-" in h.lock_owner] == []  # it let go ...
    assert all(h.lock_expires is not None for h in held)  # ... and any lease runs out
    assert pending == 0
    # The next change, on the surviving server, applies and carries traffic.
    await w.cloud.call("createPortForwardingRule", **_forward(ip, w.vm, 9100))
    assert await _answers(w, ip["ipaddress"], [*ports, 9100]) == ["web1"] * (len(ports) + 1)
    # Still one router and one repair since the last test, with one loop fewer.
    assert len(await _recreate_events(w)) == 1
    [router] = (await w.cloud.call("listRouters", networkid=w.network["id"]))["router"]
    assert router["state"] == "Running"


async def test_a_zone_whose_hosts_are_full_answers_533(world):
    """Fill the host's CPU with one instance through the API; the next deploy is refused
    with CloudStack's insufficient-capacity code, and says what was asked."""
    w = world
    zone = w.cloud.zone
    assert zone is not None
    [host] = (await w.cloud.call("listHosts", zoneid=zone.zone["id"], type="Routing"))["host"]
    capacity = (await w.cloud.call("listCapacity", zoneid=zone.zone["id"], type=1))["capacity"]
    [cpu] = [c for c in capacity if c["type"] == 1]
    free = int(cpu["capacitytotal"]) - int(cpu["capacityused"])
    cores = int(host["cpunumber"])
    filler = (await w.cloud.call("createServiceOffering", name="filler",
                                 displaytext="takes what the host has left",
                                 cpunumber=cores, cpuspeed=free // cores,
                                 memory=128))["serviceoffering"]
    await w.cloud.call("deployVirtualMachine", zoneid=zone.zone["id"],
                       serviceofferingid=filler["id"], templateid=zone.template["id"],
                       networkids=w.network["id"], name="filler")
    with pytest.raises(CloudStackApiException) as refused:
        await w.cloud.deploy(w.network, "one-too-many")
    error = refused.value.error
    assert error["errorcode"] == 533, error
    assert error["errortext"].startswith("Insufficient capacity"), error
    assert "CPU" in error["errortext"] or "cpu" in error["errortext"], error
