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

    def release_retired(self) -> None:
        """Free what the last apply replaced (called after the answer is sent)."""
        release = getattr(self.parser, "release_retired", None)
        if release is not None:
            release()

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
                    if digest == self.document_hash or doc == current:
                        return Outcome(doc.generation, False, {}, 0.0)
                    raise GenerationConflict(
                        f"generation {doc.generation} was already applied with different "
                        "content; send the new document with a higher generation"
                    )
            saving = self.store.stage(body)  # durable copy written while services apply
            try:
                outcome = await self._converge(doc)
            except BaseException:
                await asyncio.shield(saving)
                self.store.discard()
                raise
            await saving
            self.store.commit()
            self.parser.accept(raw, doc)
            self.document, self.document_body, self.document_hash = doc, body, digest
            self.last_error = None
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
            try:
                await self._converge(doc)
            except ApplyError as exc:
                self.last_error = _error_dict(exc)
                log.error("re-applying stored generation %s failed: %s", doc.generation, exc)
            # Even when a service failed, this is the document we are converging to.
            self.parser.accept(raw, doc)
            self.document, self.document_body = doc, body
            self.document_hash = document_hash(body)

    async def _converge(self, doc: Any) -> Outcome:
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
        for service, change in pending:
            committed.append(service)
            try:
                await service.commit(change)
            except ApplyError as exc:
                self._record_failure(exc)
                await self._rollback(committed)
                raise
            service.state.state, service.state.last_error = "ok", None
            service.state.last_change = change.summary
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

    def status(self) -> dict:
        return {name: s.status() for name, s in ((s.name, s) for s in self.services)}


def _error_dict(exc: ApplyError) -> dict:
    return {"service": exc.service, "message": str(exc), "output": exc.output}
