"""queryAsyncJobResult and listAsyncJobs.

A job whose answer carries a secret made for the caller (a remote access VPN's
preshared key) keeps it sealed (Command.sealed_fields): queryAsyncJobResult,
how the caller receives the answer, opens it; listAsyncJobs shows it sealed.
"""

from __future__ import annotations

from sqlalchemy import case, func, select

from mgmt.api.envelope import ListResult, PlainResult, RawJson
from mgmt.api.registry import PAGING, REGISTRY, SCOPE, Param, command
from mgmt.commands.common import date, json_paged, not_found
from mgmt.commands.scope import scoped
from mgmt.db.jobs import job_result
from mgmt.db.jsonpage import JsonField, JsonShape
from mgmt.db.models import AsyncJob
from mgmt.db.sealing import JOB_RESULT, is_sealed
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
        fields = job_fields(job)
    _open_sealed(call, job, fields.get("jobresult"))
    return PlainResult(fields)


def _open_sealed(call, job: AsyncJob, result) -> None:
    cmd = REGISTRY.get(job.kind)
    sealed = cmd is not None and cmd.sealed_fields and isinstance(result, dict)
    answer = result.get(cmd.response) if sealed else None
    for name in cmd.sealed_fields if isinstance(answer, dict) else ():
        if is_sealed(answer.get(name)):
            answer[name] = call.server.orchestrator.sealer.unseal(answer[name], JOB_RESULT)


#: A job listing's members, rendered by the database (a page is 500 of them).
LISTED = JsonShape(
    JsonField("jobid", AsyncJob.uuid),
    JsonField("cmd", AsyncJob.cmd),
    JsonField("jobstatus", AsyncJob.status, "int"),
    JsonField("jobprocstatus", AsyncJob.proc_status, "int"),
    JsonField("jobresultcode", AsyncJob.result_code, "int"),
    JsonField("jobinstancetype", AsyncJob.instance_type),
    JsonField("jobinstanceid", AsyncJob.instance_uuid),
    JsonField("created", AsyncJob.created, "date"),
    JsonField("completed", AsyncJob.completed, "date"),
    JsonField(
        "jobresulttype", case((AsyncJob.status != 0, func.coalesce(AsyncJob.result_type, "object")))
    ),
    JsonField("jobresult", case((AsyncJob.status != 0, AsyncJob.result)), "json"),
)


@command(
    "listAsyncJobs",
    description="Lists the asynchronous jobs of the caller's account (admins: their domains)",
    params=[*PAGING, *SCOPE, Param("startdate", "date", description="jobs created since")],
    list_key="asyncjobs",
    since="1.0.0",
)
async def list_async_jobs(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = await scoped(session, call.caller, args, select(AsyncJob.id), AsyncJob)
        if args["startdate"]:
            query = query.where(AsyncJob.created >= args["startdate"])
        page = await json_paged(session, query, LISTED, args, order_by=[AsyncJob.id])
        return ListResult("asyncjobs", RawJson(page.items), page.count)
