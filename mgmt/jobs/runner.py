"""Async commands: answer a jobid at once, run the work as a recorded asyncio task.

The job row is written before the answer goes out, claimed by this server
(several servers on one database never run the same job twice), and completed
with the command's result object or its error. On start, jobs left pending by
a server that stopped are resumed when their command can safely run again,
and marked failed with a reason otherwise (see mgmt/db/jobs.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from mgmt.api import envelope
from mgmt.api.dispatch import Call
from mgmt.api.errors import ApiError
from mgmt.api.params import Params
from mgmt.api.registry import REGISTRY
from mgmt.db import jobs as job_table
from mgmt.db.engine import Database
from mgmt.db.sealing import JOB_RESULT
from mgmt.db.types import new_uuid

log = logging.getLogger(__name__)

#: Parameters that are transport, not the command's input (never stored).
NOT_STORED = {"signature", "apikey", "sessionkey", "expires", "signatureversion", "response"}


class JobRunner:
    HEARTBEAT_S = 10.0
    STALE_AFTER_S = 60.0

    def __init__(self, db: Database, owner: str, server: Any):
        self.db = db
        self.owner = owner
        self.server = server
        self._tasks: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None

    def start(self, directory) -> None:
        """Heartbeat while running, and take over what other servers leave behind."""
        self._keeper = asyncio.create_task(self._keep(directory), name="job-keeper")

    async def _keep(self, directory) -> None:
        while True:
            await asyncio.sleep(self.HEARTBEAT_S)
            try:
                await job_table.heartbeat(self.db, self.owner)
                await self.recover(directory, self.STALE_AFTER_S, include_own=False)
            except Exception:  # the database may be briefly away; try again next beat
                log.exception("job heartbeat failed")

    async def submit(self, call: Call, args: dict[str, Any]) -> envelope.PlainResult:
        cmd = call.command
        first = (await cmd.prepare(call, args) or {}) if cmd.prepare else {}
        if cmd.creates:
            args["new_id"] = first["id"] = first["jobinstanceid"] = new_uuid()
        instance_uuid = first.pop("jobinstanceid", None)
        secrets = {p.name for p in cmd.params if p.secret}
        stored = {
            k: v
            for k, v in call.params.raw.items()
            if k.lower() not in NOT_STORED and k.lower() not in secrets
        }
        async with self.db.sessions() as session:
            job = await job_table.create_job(
                session,
                cmd=cmd.name,
                kind=cmd.name.lower(),
                params=stored,
                user_id=call.caller.user_id if call.caller else None,
                account_id=call.caller.account_id if call.caller else None,
                instance_type=cmd.instance_type,
                instance_uuid=instance_uuid,
                resumable=cmd.resumable,
            )
            await session.commit()
            job_id, job_uuid = job.id, job.uuid
        if not await job_table.claim_job(self.db, job_id, self.owner):
            raise ApiError(530, f"job {job_uuid} was taken by another server")  # cannot happen
        self._start(job_id, call, args)
        return envelope.PlainResult({"jobid": job_uuid, **first})

    def _start(self, job_id: int, call: Call, args: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run(job_id, call, args), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: int, call: Call, args: dict[str, Any]) -> None:
        try:
            result = await call.command.handler(call, args)
        except ApiError as exc:
            await job_table.fail_job(
                self.db, job_id, errortext=exc.text, errorcode=exc.code, owner=self.owner
            )
            return
        except Exception:
            log.exception("job %s (%s) failed", job_id, call.command.name)
            await job_table.fail_job(
                self.db,
                job_id,
                owner=self.owner,
                errortext="the job failed with an internal error; see the server log",
            )
            return
        await job_table.complete_job(
            self.db,
            job_id,
            result_type="object",
            result=self._sealed(call.command, envelope.body_of(result)),
            owner=self.owner,
        )

    def _sealed(self, cmd, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to store: its secret fields sealed (a remote access VPN's key)."""
        answer = body.get(cmd.response) if cmd.sealed_fields else None
        for name in cmd.sealed_fields if isinstance(answer, dict) else ():
            if isinstance(answer.get(name), str):
                answer[name] = self.server.orchestrator.sealer.seal(answer[name], JOB_RESULT)
        return body

    async def recover(
        self, directory, stale_after: float = STALE_AFTER_S, include_own: bool = True
    ) -> tuple[int, int]:
        """Resume or fail what a stopped server left pending. Returns (resumed, failed)."""
        resumed, failed = await job_table.recover_jobs(
            self.db, self.owner, stale_after=stale_after, include_own=include_own
        )
        for job in resumed:
            cmd = REGISTRY.get(job.kind)
            caller = await directory.caller_of_user(job.user_id) if job.user_id else None
            if (
                cmd is None
                or caller is None
                or not await job_table.claim_job(self.db, job.id, self.owner)
            ):
                continue
            params = Params(orjson.loads(job.params or "{}").items())
            call = Call(cmd, caller, params, self.server)
            self._start(job.id, call, cmd.convert(params))
        return len(resumed), len(failed)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait a little for running jobs when the server stops."""
        if self._keeper is not None:
            self._keeper.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
