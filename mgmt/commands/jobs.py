"""queryAsyncJobResult and listAsyncJobs."""

from __future__ import annotations

from sqlalchemy import select

from mgmt.api.envelope import ListResult, PlainResult, RawJson
from mgmt.api.registry import PAGING, Param, command
from mgmt.commands.common import date, not_found, paged
from mgmt.db.jobs import job_result
from mgmt.db.models import AsyncJob
from mgmt.db.tenancy import owned_by


def job_fields(
    job: AsyncJob, account_uuid: str | None = None, user_uuid: str | None = None
) -> dict:
    fields = {
        "jobid": job.uuid,
        "cmd": job.cmd,
        "jobstatus": job.status,
        "jobprocstatus": job.proc_status,
        "jobresultcode": job.result_code,
        "jobinstancetype": job.instance_type,
        "jobinstanceid": job.instance_uuid,
        "created": date(job.created),
        "completed": date(job.completed),
        "userid": user_uuid,
        "accountid": account_uuid,
    }
    if job.status != 0:
        fields["jobresulttype"] = job.result_type or "object"
        fields["jobresult"] = job_result(job)
    return fields


@command(
    "queryAsyncJobResult",
    description="Retrieves the current status of an asynchronous job",
    params=[Param("jobid", "uuid", required=True, description="the job", resource="job")],
    since="1.0.0",
)
async def query_async_job_result(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        query = owned_by(
            select(AsyncJob).where(AsyncJob.uuid == args["jobid"]), AsyncJob, call.caller
        )
        job = await session.scalar(query)
        if job is None:
            raise not_found("job", args["jobid"])
        return PlainResult(job_fields(job))


#: The columns a job listing shows, read as plain rows.
LISTED = (
    AsyncJob.uuid,
    AsyncJob.cmd,
    AsyncJob.status,
    AsyncJob.proc_status,
    AsyncJob.result_code,
    AsyncJob.instance_type,
    AsyncJob.instance_uuid,
    AsyncJob.created,
    AsyncJob.completed,
    AsyncJob.result_type,
    AsyncJob.result,
)


def listed_fields(row) -> dict:
    """A listing row's fields, without None values (so the envelope need not drop them)."""
    fields = {
        "jobid": row.uuid,
        "cmd": row.cmd,
        "jobstatus": row.status,
        "jobprocstatus": row.proc_status,
        "jobresultcode": row.result_code,
        "created": date(row.created),
    }
    if row.instance_type:
        fields["jobinstancetype"] = row.instance_type
    if row.instance_uuid:
        fields["jobinstanceid"] = row.instance_uuid
    if row.completed:
        fields["completed"] = date(row.completed)
    if row.status != 0:
        fields["jobresulttype"] = row.result_type or "object"
        if row.result:
            # Stored as JSON already: embedded as it is, not decoded and encoded again.
            fields["jobresult"] = RawJson(row.result)
    return fields


@command(
    "listAsyncJobs",
    description="Lists the asynchronous jobs of the caller's account (admins: their domains)",
    params=[*PAGING, Param("startdate", "date", description="jobs created since")],
    list_key="asyncjobs",
    since="1.0.0",
)
async def list_async_jobs(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = owned_by(select(*LISTED), AsyncJob, call.caller).order_by(AsyncJob.id)
        if args["startdate"]:
            query = query.where(AsyncJob.created >= args["startdate"])
        jobs, total = await paged(session, query, args, rows=True)
        return ListResult("asyncjobs", [listed_fields(j) for j in jobs], total, clean=True)
