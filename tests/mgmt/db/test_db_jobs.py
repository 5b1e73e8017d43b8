"""Async job rows: claim races between servers, completion, heartbeats, recovery."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from mgmt.db.engine import Database, open_database
from mgmt.db.jobs import (
    claim_job,
    complete_job,
    create_job,
    fail_job,
    heartbeat,
    job_params,
    job_result,
    recover_jobs,
)
from mgmt.db.models import AsyncJob, JobStatus
from mgmt.db.types import utcnow


async def _new_job(db: Database, cmd: str = "deployVirtualMachine", **kw: object) -> int:
    async with db.sessions() as session, session.begin():
        job = await create_job(
            session, cmd=cmd, kind=cmd.lower(), params={"zoneid": "z", "n": 1},
            user_id=None, account_id=None, **kw,  # type: ignore[arg-type]
        )
    return job.id


async def _get(db: Database, job_id: int) -> AsyncJob:
    async with db.sessions() as session:
        return await session.get_one(AsyncJob, job_id)


async def _age(db: Database, job_id: int, seconds: float, *, heartbeat_too: bool = True) -> None:
    """Pretend the job was created (and last heartbeat) ``seconds`` ago."""
    then = utcnow() - timedelta(seconds=seconds)
    values = {"created": then, **({"heartbeat": then} if heartbeat_too else {})}
    async with db.sessions() as session, session.begin():
        await session.execute(update(AsyncJob).where(AsyncJob.id == job_id).values(**values))


async def test_a_new_job_is_pending_and_unowned(db: Database) -> None:
    job = await _get(db, await _new_job(db, instance_type="VirtualMachine", instance_uuid="u"))
    assert job.status == JobStatus.PENDING and job.owner is None and job.result is None
    assert job_params(job) == {"zoneid": "z", "n": 1}
    assert (job.instance_type, job.instance_uuid) == ("VirtualMachine", "u")
    assert len(job.uuid) == 36 and job.created.tzinfo is not None


async def test_two_servers_claiming_the_same_jobs_never_both_win(db_url: str) -> None:
    """Two engines stand for two management servers on one database."""
    one, two = await open_database(db_url, migrate=False), await open_database(db_url)
    try:
        ids = [await _new_job(one) for _ in range(20)]
        wins = await asyncio.gather(
            *(claim_job(server, job_id, name)
              for job_id in ids
              for server, name in ((one, "server-1"), (two, "server-2")))
        )
        for index, job_id in enumerate(ids):
            pair = wins[2 * index: 2 * index + 2]
            assert sorted(pair) == [False, True], f"job {job_id}: {pair}"
            owner = (await _get(one, job_id)).owner
            assert owner == ("server-1" if pair[0] else "server-2")
        # Claimed jobs cannot be claimed again, not even by their owner.
        assert not await claim_job(two, ids[0], "server-2")
    finally:
        await one.close()
        await two.close()


async def test_complete_and_fail_record_the_outcome_once(db: Database) -> None:
    ok, bad = await _new_job(db), await _new_job(db)
    assert await claim_job(db, ok, "me") and await claim_job(db, bad, "me")
    assert not await complete_job(
        db, ok, result_type="object", result={}, owner="someone-else"
    )
    assert await complete_job(
        db, ok, result_type="object", result={"virtualmachine": {"id": "x"}}, owner="me"
    )
    assert not await fail_job(db, ok, errortext="too late")
    job = await _get(db, ok)
    assert (job.status, job.result_code, job.result_type) == (JobStatus.SUCCEEDED, 0, "object")
    assert job_result(job) == {"virtualmachine": {"id": "x"}} and job.completed is not None

    assert await fail_job(db, bad, errortext="zone z is disabled", errorcode=431, owner="me")
    job = await _get(db, bad)
    assert (job.status, job.result_code) == (JobStatus.FAILED, 431)
    assert job_result(job) == {"errorcode": 431, "errortext": "zone z is disabled"}


async def test_heartbeat_touches_only_the_owners_pending_jobs(db: Database) -> None:
    mine, theirs, done = await _new_job(db), await _new_job(db), await _new_job(db)
    for job_id, owner in ((mine, "me"), (theirs, "them"), (done, "me")):
        assert await claim_job(db, job_id, owner)
        await _age(db, job_id, 600)
    await complete_job(db, done, result_type="text", result="ok")
    assert await heartbeat(db, "me") == 1
    recent = utcnow() - timedelta(seconds=60)
    assert (await _get(db, mine)).heartbeat > recent  # type: ignore[operator]
    assert (await _get(db, theirs)).heartbeat < recent  # type: ignore[operator]


async def test_recover_after_restart(db: Database) -> None:
    """This server ("me") restarted; "dead" stopped long ago; "alive" still beats."""
    own_plain = await _new_job(db, "createFirewallRule")
    own_resumable = await _new_job(db, "restartNetwork", resumable=True)
    dead_plain = await _new_job(db, "createVPC")
    dead_resumable = await _new_job(db, "stopRouter", resumable=True)
    alive = await _new_job(db, "deployVirtualMachine")
    unclaimed_old = await _new_job(db, "createNetwork")
    unclaimed_new = await _new_job(db, "createNetwork")
    finished = await _new_job(db, "createTags")
    for job_id, owner in ((own_plain, "me"), (own_resumable, "me"), (dead_plain, "dead"),
                          (dead_resumable, "dead"), (alive, "alive"), (finished, "dead")):
        assert await claim_job(db, job_id, owner)
    await complete_job(db, finished, result_type="object", result={})
    for job_id in (dead_plain, dead_resumable, unclaimed_old, finished):
        await _age(db, job_id, 3600)

    resumed, failed = await recover_jobs(db, "me", stale_after=300)

    assert sorted(j.id for j in resumed) == sorted([own_resumable, dead_resumable])
    assert sorted(j.id for j in failed) == sorted([own_plain, dead_plain, unclaimed_old])
    for job_id in (own_resumable, dead_resumable):
        job = await _get(db, job_id)
        assert job.status == JobStatus.PENDING and job.owner is None
    for job_id in (alive, unclaimed_new):
        assert (await _get(db, job_id)).status == JobStatus.PENDING
    assert (await _get(db, alive)).owner == "alive"
    assert (await _get(db, finished)).status == JobStatus.SUCCEEDED

    dead = await _get(db, dead_plain)
    assert dead.status == JobStatus.FAILED and dead.result_code == 530
    text = job_result(dead)["errortext"]
    assert "stopped (owner dead)" in text and "createVPC cannot be safely repeated" in text
    assert "before any server took it" in job_result(await _get(db, unclaimed_old))["errortext"]

    # A resumed job is claimed again by exactly one server, then runs as usual.
    assert await claim_job(db, dead_resumable, "me")
    assert not await claim_job(db, dead_resumable, "alive")
    # Nothing is left for a second pass.
    assert await recover_jobs(db, "me", stale_after=300, include_own=False) == ([], [])


async def test_two_servers_recovering_together_handle_each_job_once(db_url: str) -> None:
    one, two = await open_database(db_url, migrate=False), await open_database(db_url)
    try:
        ids = [await _new_job(one, resumable=bool(i % 2)) for i in range(6)]
        for job_id in ids:
            assert await claim_job(one, job_id, "dead")
            await _age(one, job_id, 3600)
        (r1, f1), (r2, f2) = await asyncio.gather(
            recover_jobs(one, "server-1", stale_after=60),
            recover_jobs(two, "server-2", stale_after=60),
        )
        assert sorted(j.id for j in r1 + r2) == ids[1::2]
        assert sorted(j.id for j in f1 + f2) == ids[0::2]
        async with one.sessions() as session:
            pending = await session.scalars(
                select(AsyncJob.id).where(AsyncJob.status == JobStatus.PENDING)
            )
            assert sorted(pending) == ids[1::2]
    finally:
        await one.close()
        await two.close()


async def test_results_may_be_given_as_json_text(db: Database) -> None:
    ok, bad = await _new_job(db), await _new_job(db)
    assert await complete_job(db, ok, result_type="object", result='{"vpc":{"id":"v"}}')
    assert job_result(await _get(db, ok)) == {"vpc": {"id": "v"}}
    body = '{"errorcode":534,"errortext":"router r1 does not answer"}'
    assert await fail_job(db, bad, result=body, result_code=534)
    job = await _get(db, bad)
    assert (job.status, job.result_code) == (JobStatus.FAILED, 534)
    assert job_result(job)["errortext"] == "router r1 does not answer"
