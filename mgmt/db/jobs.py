"""The async job table: create, claim, heartbeat, finish, recover after a restart.

Ownership is the ``owner`` column. Every change of a pending job is one
conditional UPDATE (``WHERE status = 0 AND owner ...``) whose row count says
whether this server won, so several servers on one PostgreSQL database never
run a job twice: PostgreSQL row-locks the updated row and re-checks the WHERE
after a concurrent update commits; SQLite serializes writers.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.engine import Database
from mgmt.db.models import AsyncJob, JobStatus
from mgmt.db.types import utcnow

INTERNAL_ERROR = 530


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def as_json_text(result: Any) -> str:
    """A str is taken as JSON text already (what the column holds); anything else is encoded."""
    return result if isinstance(result, str) else dumps(result)


def job_params(job: AsyncJob) -> dict[str, Any]:
    return json.loads(job.params or "{}")  # type: ignore[no-any-return]


def job_result(job: AsyncJob) -> Any:
    """The decoded ``result`` (None while the job is pending; raw text if not JSON)."""
    if job.result is None:
        return None
    try:
        return json.loads(job.result)
    except ValueError:
        return job.result


async def create_job(
    session: AsyncSession,
    *,
    cmd: str,
    kind: str,
    params: dict[str, Any],
    user_id: int | None,
    account_id: int | None,
    instance_type: str | None = None,
    instance_uuid: str | None = None,
    resumable: bool = False,
) -> AsyncJob:
    """Add a pending, unowned job to ``session`` (flushed, not committed)."""
    job = AsyncJob(
        cmd=cmd,
        kind=kind,
        params=dumps(params),
        user_id=user_id,
        account_id=account_id,
        instance_type=instance_type,
        instance_uuid=instance_uuid,
        resumable=resumable,
        status=JobStatus.PENDING,
    )
    session.add(job)
    await session.flush()
    return job


async def _update(db: Database, statement: Any) -> int:
    async with db.sessions() as session, session.begin():
        result: CursorResult[Any] = await session.execute(statement)  # type: ignore[assignment]
        return result.rowcount


def _pending(job_id: int, owner: str | None) -> Any:
    """WHERE the job is pending and, if ``owner`` is given, still owned by it."""
    where = and_(AsyncJob.id == job_id, AsyncJob.status == JobStatus.PENDING)
    if owner is not None:
        where = and_(where, AsyncJob.owner == owner)
    return where


async def claim_job(db: Database, job_id: int, owner: str) -> bool:
    """Take a pending, unowned job; True only for the one caller that got it."""
    count = await _update(
        db,
        update(AsyncJob)
        .where(_pending(job_id, None), AsyncJob.owner.is_(None))
        .values(owner=owner, heartbeat=utcnow()),
    )
    return count == 1


async def complete_job(
    db: Database,
    job_id: int,
    *,
    result_type: str,
    result: Any,
    result_code: int = 0,
    status: int = JobStatus.SUCCEEDED,
    owner: str | None = None,
) -> bool:
    """Record the outcome. With ``owner``, only if that server still owns the job.

    ``result`` is the jobresult (``{"network": {...}}`` for result_type
    ``object``), as JSON text or as a value to encode. False if the job was no
    longer pending (or not ``owner``'s).
    """
    count = await _update(
        db,
        update(AsyncJob)
        .where(_pending(job_id, owner))
        .values(
            status=status,
            result_type=result_type,
            result=as_json_text(result),
            result_code=result_code,
            completed=utcnow(),
        ),
    )
    return count == 1


async def fail_job(
    db: Database,
    job_id: int,
    *,
    errortext: str | None = None,
    errorcode: int = INTERNAL_ERROR,
    result: Any = None,
    result_code: int | None = None,
    owner: str | None = None,
) -> bool:
    """Fail the job: give ``errortext`` (and ``errorcode``) for CloudStack's
    ``{"errorcode", "errortext"}`` result, or a ready ``result`` and ``result_code``."""
    code = errorcode if result_code is None else result_code
    if result is None:
        result = {"errorcode": code, "errortext": errortext or "the job failed"}
    return await complete_job(
        db,
        job_id,
        result_type="object",
        result=result,
        result_code=code,
        status=JobStatus.FAILED,
        owner=owner,
    )


async def set_proc_status(db: Database, job_id: int, proc_status: int, owner: str) -> bool:
    return await _update(
        db,
        update(AsyncJob).where(_pending(job_id, owner)).values(proc_status=proc_status),
    ) == 1


async def heartbeat(db: Database, owner: str) -> int:
    """Mark ``owner``'s running jobs alive; returns how many it owns."""
    return await _update(
        db,
        update(AsyncJob)
        .where(AsyncJob.status == JobStatus.PENDING, AsyncJob.owner == owner)
        .values(heartbeat=utcnow()),
    )


def stopped_text(job: AsyncJob) -> str:
    who = f"owner {job.owner}" if job.owner else "before any server took it"
    return (
        f"the management server running this job stopped ({who}) before it finished; "
        f"the job was not resumed because {job.cmd} cannot be safely repeated"
    )


async def recover_jobs(
    db: Database, owner: str, *, stale_after: float, include_own: bool = True
) -> tuple[list[AsyncJob], list[AsyncJob]]:
    """Deal with pending jobs whose server is gone; returns (resumed, failed).

    Orphans are pending jobs owned by ``owner`` itself (it just restarted;
    ``include_own=False`` for a periodic sweep while running), owned by a
    server whose heartbeat is older than ``stale_after`` seconds, or never
    claimed and older than that. Resumable orphans are released (owner NULL)
    and returned: the caller claims them with claim_job, and only one server
    wins. The others are failed with an errortext that says what happened.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after)
    dead_owner = and_(
        AsyncJob.owner.is_not(None),
        or_(AsyncJob.heartbeat.is_(None), AsyncJob.heartbeat < cutoff),
    )
    never_claimed = and_(AsyncJob.owner.is_(None), AsyncJob.created < cutoff)
    orphaned = [dead_owner, never_claimed]
    if include_own:
        orphaned.append(AsyncJob.owner == owner)
    async with db.sessions() as session:
        candidates = list(
            await session.scalars(
                select(AsyncJob)
                .where(AsyncJob.status == JobStatus.PENDING, or_(*orphaned))
                .order_by(AsyncJob.id)
            )
        )
    resumed: list[AsyncJob] = []
    failed: list[AsyncJob] = []
    for job in candidates:
        if job.resumable:
            if await _release(db, job):
                resumed.append(job)
        elif await _fail_orphan(db, job):
            failed.append(job)
    return resumed, failed


def _same_owner(job: AsyncJob) -> Any:
    """WHERE the job is still as recover_jobs saw it (pending, same owner)."""
    where = and_(AsyncJob.id == job.id, AsyncJob.status == JobStatus.PENDING)
    if job.owner is None:
        return and_(where, AsyncJob.owner.is_(None))
    return and_(where, AsyncJob.owner == job.owner)


async def _release(db: Database, job: AsyncJob) -> bool:
    if job.owner is None:
        return True
    count = await _update(
        db, update(AsyncJob).where(_same_owner(job)).values(owner=None, heartbeat=None)
    )
    if count == 1:
        job.owner = None
        job.heartbeat = None
    return count == 1


async def _fail_orphan(db: Database, job: AsyncJob) -> bool:
    errortext = stopped_text(job)
    result = {"errorcode": INTERNAL_ERROR, "errortext": errortext}
    now = utcnow()
    count = await _update(
        db,
        update(AsyncJob)
        .where(_same_owner(job))
        .values(
            status=JobStatus.FAILED,
            result_type="object",
            result=dumps(result),
            result_code=INTERNAL_ERROR,
            completed=now,
        ),
    )
    if count == 1:
        job.status = JobStatus.FAILED
        job.result_type = "object"
        job.result = dumps(result)
        job.result_code = INTERNAL_ERROR
        job.completed = now
    return count == 1
