"""Two management servers on one database share the job table.

Jobs submitted through either server each run exactly once; a job left
pending by a server that stopped is taken over by the other: resumed when
its command can safely run again, failed with a reason otherwise.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from cs.client import CloudStack
from sqlalchemy import select, update

from mgmt.db import jobs as job_table
from mgmt.db.models import AsyncJob, Domain, Event, JobStatus, User
from mgmt.db.types import utcnow
from mgmt.server.app import ManagementServer, Settings


async def _servers(tmp_path, db_url, count=2) -> list[ManagementServer]:
    servers = []
    for n in range(count):
        server = ManagementServer(Settings(home=tmp_path / f"home{n}", port=0, db=db_url))
        await server.open()
        [server.url] = await server.listen()
        servers.append(server)
    return servers


def _client(server, admin) -> CloudStack:
    return CloudStack(server.url, key=admin.apikey, secret=admin.secretkey,
                      fetch_result=True, poll_interval=0.05)


async def test_jobs_through_two_servers_each_run_once(tmp_path, db_url):
    a, b = await _servers(tmp_path, db_url)
    try:
        clients = [_client(a, a.admin), _client(b, a.admin)]
        domains = []
        for n in range(8):
            made = await asyncio.to_thread(clients[n % 2].createDomain, name=f"d{n}")
            domains.append(made["domain"])
        results = await asyncio.gather(*(
            asyncio.to_thread(clients[n % 2].deleteDomain, id=d["id"])
            for n, d in enumerate(domains)))
        assert all(r == {"success": True} for r in results)
        async with a.db.sessions() as session:
            jobs = (await session.scalars(select(AsyncJob).where(
                AsyncJob.cmd == "deleteDomain"))).all()
            assert len(jobs) == 8 and all(j.status == JobStatus.SUCCEEDED for j in jobs)
            assert {j.owner for j in jobs} == {a.id, b.id}  # both servers ran jobs
            deletes = (await session.scalars(select(Event).where(
                Event.type == "DOMAIN.DELETE"))).all()
            assert len(deletes) == 8  # each job ran once
    finally:
        await b.close()
        await a.close()


async def test_a_stopped_servers_jobs_are_taken_over(tmp_path, db_url):
    a, b = await _servers(tmp_path, db_url)
    try:
        async with a.db.sessions() as session:
            admin_id = await session.scalar(select(User.id).where(User.username == "admin"))
            root = await session.scalar(select(Domain).where(Domain.path == "ROOT"))
            session.add(Domain(name="orphan", path="ROOT/orphan", parent_id=root.id, level=1))
            await session.commit()
            orphan_uuid = await session.scalar(select(Domain.uuid).where(
                Domain.path == "ROOT/orphan"))
            # A server "gone-1" took two jobs and stopped before finishing them.
            resumable = await job_table.create_job(
                session, cmd="deleteDomain", kind="deletedomain", params={"id": orphan_uuid},
                user_id=admin_id, account_id=None, resumable=True)
            unsafe = await job_table.create_job(
                session, cmd="deleteDomain", kind="deletedomain", params={"id": orphan_uuid},
                user_id=admin_id, account_id=None, resumable=False)
            await session.commit()
            ids = (resumable.id, unsafe.id)
        stale = utcnow() - timedelta(minutes=5)
        async with a.db.sessions() as session:
            await session.execute(update(AsyncJob).where(AsyncJob.id.in_(ids)).values(
                owner="gone-1", heartbeat=stale))
            await session.commit()
        resumed, failed = await b.jobs.recover(b.directory, stale_after=60, include_own=False)
        assert (resumed, failed) == (1, 1)
        for _ in range(200):
            async with b.db.sessions() as session:
                jobs = {j.id: j for j in (await session.scalars(
                    select(AsyncJob).where(AsyncJob.id.in_(ids)))).all()}
            if all(j.status != JobStatus.PENDING for j in jobs.values()):
                break
            await asyncio.sleep(0.05)
        assert jobs[ids[0]].status == JobStatus.SUCCEEDED and jobs[ids[0]].owner == b.id
        assert jobs[ids[1]].status == JobStatus.FAILED
        assert "stopped" in job_table.job_result(jobs[ids[1]])["errortext"]
    finally:
        await b.close()
        await a.close()
