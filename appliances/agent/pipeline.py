"""Applying a whole document across services, all or nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from appliances.agent.service import Service
from appliances.agent.store import DocumentStore, document_hash
from appliances.common.errors import ApplyError

log = logging.getLogger(__name__)


class Parser(Protocol):
    """Validates raw documents; may reuse work from the last accepted one."""

    def parse(self, raw: Any) -> Any: ...

    def accept(self, raw: Any, doc: Any) -> None: ...


class Role(Protocol):
    name: str
    model: type

    def parser(self) -> Parser: ...

    def services(self, ctx) -> list[Service]: ...


class GenerationConflict(Exception):
    pass


@dataclass
class Outcome:
    generation: int
    changed: bool
    services: dict[str, str]
    elapsed_ms: float


class Applier:
    """Owns the applied document and serialises every change to it."""

    def __init__(self, role: Role, services: list[Service], store: DocumentStore):
        self.role = role
        self.parser = role.parser()
        self.services = services
        self.store = store
        self.document: Any = None
        self.document_body: bytes | None = None
        self.document_hash: str | None = None
        self.last_error: dict | None = None
        # False while the applied document is not fully in place (a failed start,
        # a failed rollback): a resend of the same generation then converges again,
        # and a background task keeps retrying.
        self.converged = True
        self._retry: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def generation(self) -> int | None:
        return self.document.generation if self.document is not None else None

    def release_retired(self) -> None:
        """Free what the last apply replaced (called after the answer is sent)."""
        release = getattr(self.parser, "release_retired", None)
        if release is not None:
            release()

    def parse(self, raw: Any) -> Any:
        """Validate a raw document (DocumentError names every bad field)."""
        return self.parser.parse(raw)

    async def apply(self, doc: Any, raw: Any, body: bytes) -> Outcome:
        """Converge to ``doc`` (parsed from ``raw``, sent as ``body``), or raise.

        Raises GenerationConflict for an older generation or a reused one with
        different content, ApplyError when a service fails (after rollback).
        """
        digest = document_hash(body)
        async with self._lock:
            current = self.document
            if current is not None:
                if doc.generation < current.generation:
                    raise GenerationConflict(
                        f"generation {doc.generation} is older than the applied generation "
                        f"{current.generation}"
                    )
                if doc.generation == current.generation:
                    same = digest == self.document_hash or doc == current
                    if same and self.converged:
                        return Outcome(doc.generation, False, {}, 0.0)
                    if same:
                        outcome = await self._converge(doc, rollback=False)
                        self._converged_now()
                        return outcome
                    raise GenerationConflict(
                        f"generation {doc.generation} was already applied with different "
                        "content; send the new document with a higher generation"
                    )
            saving = self.store.stage(body)  # durable copy written while services apply
            try:
                outcome = await self._converge(doc, rollback=True)
            except BaseException:
                await asyncio.shield(saving)
                self.store.discard()
                raise
            await saving
            self.store.commit()
            self.parser.accept(raw, doc)
            self.document, self.document_body, self.document_hash = doc, body, digest
            self._converged_now()
            return outcome

    async def restore(self) -> None:
        """Re-apply the persisted last good document (agent start)."""
        body = self.store.load()
        if body is None:
            return
        try:
            raw = orjson.loads(body)
            doc = self.parser.parse(raw)
        except ValueError as exc:
            self.last_error = {"message": f"stored document is invalid: {exc}"}
            log.error("stored document %s is invalid: %s", self.store.path, exc)
            return
        async with self._lock:
            # This is the document to converge to, whatever happens below.
            self.parser.accept(raw, doc)
            self.document, self.document_body = doc, body
            self.document_hash = document_hash(body)
            try:
                # Nothing better to go back to: keep what worked, retry what did not.
                await self._converge(doc, rollback=False)
                self._converged_now()
            except ApplyError as exc:
                log.error("re-applying stored generation %s failed: %s", doc.generation, exc)
                self._not_converged()

    def _converged_now(self) -> None:
        self.converged, self.last_error = True, None

    def _not_converged(self) -> None:
        self.converged = False
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._keep_converging(), name="reconverge")

    async def _keep_converging(self, first_delay: float = 2.0, max_delay: float = 60.0) -> None:
        """Retry the applied document until it is in place (or a newer one is)."""
        delay = first_delay
        while not self.converged:
            await asyncio.sleep(delay)
            async with self._lock:
                if self.converged or self.document is None:
                    return
                try:
                    await self._converge(self.document, rollback=False)
                    self._converged_now()
                    log.info("generation %s is in place after a retry", self.document.generation)
                except ApplyError as exc:
                    log.warning("retrying generation %s failed: %s", self.document.generation, exc)
            delay = min(delay * 2, max_delay)

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()

    async def _converge(self, doc: Any, *, rollback: bool) -> Outcome:
        """Bring every service to ``doc``. With ``rollback``, a failure returns the
        touched services to the applied document; without, the remaining services
        still go on (best effort) and the first failure is raised at the end."""
        started = time.perf_counter()
        changes = [await service.prepare(doc) for service in self.services]
        pending = [(s, c) for s, c in zip(self.services, changes, strict=True) if c.changed]
        try:
            for service, change in pending:
                await service.check(change)
        except ApplyError as exc:
            self._record_failure(exc)
            raise
        committed: list[Service] = []
        failures: list[ApplyError] = []
        for service, change in pending:
            committed.append(service)
            try:
                await service.commit(change)
            except ApplyError as exc:
                self._record_failure(exc)
                if not rollback:
                    failures.append(exc)
                    continue
                await self._rollback(committed)
                raise
            service.state.state, service.state.last_error = "ok", None
            service.state.last_change = change.summary
        if failures:
            raise failures[0]
        for service in self.services:
            if service.state.state == "idle":
                service.state.state = "ok"
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(
            doc.generation,
            bool(pending),
            {c.service: c.summary for c in changes if c.changed},
            elapsed,
        )

    def _record_failure(self, exc: ApplyError) -> None:
        self.last_error = _error_dict(exc)
        for service in self.services:
            if service.name == exc.service:
                service.state.state = "failed"
                service.state.last_error = str(exc)
                service.state.event(f"apply failed: {exc}")

    async def _rollback(self, committed: list[Service]) -> None:
        """Return every touched service to the last good document."""
        good = self.document
        for service in reversed(committed):
            try:
                if good is None:
                    await service.withdraw()
                else:
                    change = await service.prepare(good)
                    if change.changed:
                        await service.commit(change)
                service.state.event(
                    f"rolled back to generation {good.generation if good else 'none'}"
                )
                if service.state.state == "failed":
                    service.state.state = "ok" if good is not None else "idle"
            except Exception as exc:  # keep rolling the others back
                log.exception("rollback of %s failed", service.name)
                service.state.state = "failed"
                service.state.last_error = f"rollback failed: {exc}"
                if good is not None:
                    self._not_converged()

    def status(self) -> dict:
        return {s.name: s.status() for s in self.services}

    async def live_status(self, timeout: float = 3.0) -> dict:
        """Every service's live status; one that does not answer in time gives its
        plain status with a note instead of holding up the others."""

        async def one(service: Service) -> dict:
            try:
                return await asyncio.wait_for(service.live_status(), timeout)
            except Exception as exc:  # noqa: BLE001 - status must always answer
                return {**service.status(), "live_error": f"{type(exc).__name__}: {exc}"}

        results = await asyncio.gather(*(one(s) for s in self.services))
        return {s.name: r for s, r in zip(self.services, results, strict=True)}


def _error_dict(exc: ApplyError) -> dict:
    return {"service": exc.service, "message": str(exc), "output": exc.output}
