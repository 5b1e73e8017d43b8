"""Each zone's template rows follow what its storage appliance reports.

The poller reads ``GET /v1/images`` of every zone that has a row still in flight
(waiting, arriving, or being deleted) every ``template.status.interval`` seconds,
and sets the row's download state, percentage, sizes and CloudStack's status
text (``Download pending``, ``45% Downloaded``, ``Installing Template``,
``Download Complete``, ``NotUploaded``, ``UploadInProgress``, ``UploadAbandoned``
or the appliance's error). A row is ready only when the appliance says
Downloaded *and* what it holds is what was declared (format, checksum): nothing
half-written, nothing unverified is ever ready. A row being deleted goes once the
appliance reports the image Deleted (or its store no longer lists it).

An image the appliance does not list yet (or lists from an older description)
makes the poller push the zone's document again; so does every API change
(:func:`changed`). Without an appliance in the zone the rows stay pending and
their status says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
from sqlalchemy import or_, select

from appliances.lab.agentclient import AgentError
from appliances.storage.checksum import parse_checksum
from mgmt.db.models.catalog import Template, TemplateZone
from mgmt.db.settings import get_setting
from mgmt.db.types import utcnow
from mgmt.orchestration.storage_images import image_entry, locate, site_for

log = logging.getLogger("skiff.templates")

# CloudStack's download states (VMTemplateStorageResourceAssoc.Status).
NOT_DOWNLOADED = "NOT_DOWNLOADED"
DOWNLOAD_IN_PROGRESS = "DOWNLOAD_IN_PROGRESS"
DOWNLOADED = "DOWNLOADED"
DOWNLOAD_ERROR = "DOWNLOAD_ERROR"
NOT_UPLOADED = "NOT_UPLOADED"
UPLOAD_IN_PROGRESS = "UPLOAD_IN_PROGRESS"
UPLOAD_ERROR = "UPLOAD_ERROR"
ABANDONED = "ABANDONED"
#: Rows the poller still watches (besides those being deleted).
IN_FLIGHT = (NOT_DOWNLOADED, DOWNLOAD_IN_PROGRESS, NOT_UPLOADED, UPLOAD_IN_PROGRESS)
#: No appliance ever reported bytes for these: a deletion need not wait for one.
NOTHING_STORED = (NOT_DOWNLOADED, NOT_UPLOADED, ABANDONED)

PENDING = "Download pending"
LOOK_TIMEOUT = 10.0


def status_text(state: str, percent: int = 0, error: str | None = None) -> str:
    """listTemplates' ``status`` as CloudStack words it."""
    if state == DOWNLOAD_IN_PROGRESS:
        return "Installing Template" if percent >= 100 else f"{percent}% Downloaded"
    if state in (DOWNLOAD_ERROR, UPLOAD_ERROR):
        return (error or "Error").strip()[:255]
    return {
        DOWNLOADED: "Download Complete",
        NOT_UPLOADED: "NotUploaded",
        UPLOAD_IN_PROGRESS: "UploadInProgress",
        ABANDONED: "UploadAbandoned",
    }.get(state, PENDING)


def fields_for(state: str, percent: int = 0, error: str | None = None, **extra) -> dict:
    """Column values for a row in ``state`` (not ready unless ``extra`` says so)."""
    return {
        "download_state": state,
        "download_percent": percent,
        "error": error,
        "status": status_text(state, percent, error),
        "is_ready": False,
        **extra,
    }


@dataclass
class Seen:
    """What one look at the appliance's report means for one row."""

    action: str  # "update", "remove", "push" or "keep"
    fields: dict = field(default_factory=dict)


def observe(
    tz: TemplateZone, template: Template, item: dict | None, *, store_open: bool, now: datetime
) -> Seen:
    """The row's new state from the appliance's item for it (None: not listed)."""
    if tz.deleting:
        if item is None:
            return Seen("remove" if store_open else "keep")
        return Seen("remove") if item.get("state") == "Deleted" else Seen("push")
    upload = tz.source == "upload"
    entry, problem = image_entry(tz, template)
    if entry is None:
        return Seen("update", fields_for(UPLOAD_ERROR if upload else DOWNLOAD_ERROR, error=problem))
    if item is None or _stale(item, entry):
        if _abandoned(tz, item, now):
            return Seen("update", fields_for(ABANDONED))
        return Seen("push")
    state, percent = item.get("state"), _percent(item)
    if state == "Queued":
        return Seen("update", fields_for(NOT_DOWNLOADED))
    if state == "Downloading":
        return Seen("update", fields_for(DOWNLOAD_IN_PROGRESS, percent))
    if state == "Uploading":
        return Seen("update", fields_for(UPLOAD_IN_PROGRESS, percent))
    if state == "AwaitingUpload":
        return Seen("update", fields_for(ABANDONED if _abandoned(tz, item, now) else NOT_UPLOADED))
    if state == "Error":
        return Seen(
            "update",
            fields_for(
                UPLOAD_ERROR if upload else DOWNLOAD_ERROR,
                percent,
                item.get("error") or "the transfer failed",
            ),
        )
    if state == "Downloaded":
        problem = _unverified(item, entry)
        if problem:
            return Seen(
                "update", fields_for(UPLOAD_ERROR if upload else DOWNLOAD_ERROR, 100, problem)
            )
        return Seen(
            "update",
            fields_for(
                DOWNLOADED,
                100,
                is_ready=True,
                size=item.get("virtual_size"),
                physical_size=item.get("physical_size"),
                stored_checksum=item.get("checksum"),
            ),
        )
    return Seen("push")  # Deleted (an older document) or a state this server does not know


def _percent(item: dict) -> int:
    try:
        return max(0, min(100, int(item.get("percent") or 0)))
    except (TypeError, ValueError):
        return 0


def _stale(item: dict, entry: dict) -> bool:
    """Does the item describe an older version of the entry (document not applied yet)?"""
    wants_upload = "url" not in entry
    if (item.get("source") == "upload") != wants_upload or item.get("format") != entry["format"]:
        return True
    if item.get("declared_checksum") != entry.get("checksum"):
        return True
    # An installed image read back from the store after a restart has attempt 0: only a
    # failed one is waiting for a raised attempt.
    return item.get("state") == "Error" and (item.get("attempt") or 0) < entry["attempt"]


def _abandoned(tz: TemplateZone, item: dict | None, now: datetime) -> bool:
    """An upload whose signature expired before any byte arrived."""
    if tz.source != "upload" or tz.upload_expires is None or tz.upload_expires > now:
        return False
    return item is None or item.get("state") == "AwaitingUpload"


def _unverified(item: dict, entry: dict) -> str | None:
    """Why a Downloaded item is not what the row declared; None: it is."""
    stored = item.get("checksum")
    if item.get("format") != entry["format"]:
        return f"the image store holds a {item.get('format')} image, not {entry['format']}"
    try:
        held = parse_checksum(stored or "")
    except ValueError:
        return f"the image store reported no usable checksum ({stored!r})"
    if entry.get("checksum"):
        declared = parse_checksum(entry["checksum"])
        if (held.algorithm, held.hexdigest) != (declared.algorithm, declared.hexdigest):
            return f"checksum mismatch: declared {declared}, the image store holds {held}"
    if not isinstance(item.get("physical_size"), int):
        return "the image store reported no size"
    return None


# -- pushing ---------------------------------------------------------------------------------


async def mark_waiting(orch, zone_id: int, why: str | None) -> None:
    """Rows nothing reported on yet say why they wait (None: the appliance has the list);
    uploads whose signature expired meanwhile are abandoned."""
    now = utcnow()
    text = (f"{PENDING}: {why}" if why else PENDING)[:255]
    async with orch.db.sessions() as session:
        rows = (
            await session.scalars(
                select(TemplateZone).where(
                    TemplateZone.zone_id == zone_id,
                    TemplateZone.live(),
                    TemplateZone.deleting.is_(False),
                    TemplateZone.download_state.in_((NOT_DOWNLOADED, NOT_UPLOADED)),
                )
            )
        ).all()
        for tz in rows:
            if tz.download_state == NOT_DOWNLOADED and tz.status != text:
                tz.status = text
            elif _abandoned(tz, None, now):
                _apply(tz, fields_for(ABANDONED))
        await session.commit()


async def push_zone(orch, zone_id: int) -> bool:
    """Send the zone's storage document; False (and the reason on the waiting rows) when
    no appliance runs there or it did not take the document."""
    agent, why = await locate(orch, zone_id)
    if agent is None:
        await mark_waiting(orch, zone_id, why)
        return False
    try:
        await site_for(orch).push(orch, zone_id)
    except Exception as exc:  # noqa: BLE001 - any failure: the rows say it, the poller retries
        log.warning("zone %s: storage document not pushed: %s", zone_id, exc)
        await mark_waiting(
            orch, zone_id, f"the secondary storage VM did not take the image list ({exc})"
        )
        return False
    await mark_waiting(orch, zone_id, None)
    return True


def changed(orch, zone_ids: Iterable[int]) -> None:
    """After an API change: push each zone's document in the background."""
    zones = sorted(set(zone_ids))
    if zones:
        orch.spawn(_push_each(orch, zones), f"template-push-{'-'.join(map(str, zones))}")


async def _push_each(orch, zone_ids: list[int]) -> None:
    for zone_id in zone_ids:
        try:
            await push_zone(orch, zone_id)
        except Exception:  # a background task must not die silently
            log.exception("zone %s: pushing the storage document failed", zone_id)


# -- polling ---------------------------------------------------------------------------------


@dataclass
class Report:
    zones: list[int] = field(default_factory=list)
    updated: int = 0
    removed: int = 0
    pushed: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)


class ImagePoller:
    """The loop (one per server; every server may run it, updates are idempotent)."""

    def __init__(self, orch):
        self.orch = orch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = self.orch.spawn(self._run(), "template-status")

    async def _run(self) -> None:
        while True:
            try:
                async with self.orch.db.sessions() as session:
                    interval = float(await get_setting(session, "template.status.interval"))
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything one pass meets
                log.exception("template status pass failed")
                interval = 5.0
            await asyncio.sleep(interval)

    async def pass_once(self, zone_ids: Iterable[int] | None = None) -> Report:
        report = Report(zones=sorted(zone_ids) if zone_ids is not None else await self._busy())
        for zone_id in report.zones:
            await self.look(zone_id, report)
        return report

    async def _busy(self) -> list[int]:
        async with self.orch.db.sessions() as session:
            found = await session.scalars(
                select(TemplateZone.zone_id).where(TemplateZone.live(), _watched()).distinct()
            )
            return sorted(found.all())

    async def look(self, zone_id: int, report: Report) -> None:
        agent, why = await locate(self.orch, zone_id)
        if agent is None:
            await mark_waiting(self.orch, zone_id, why)
            return
        try:
            reply = await agent.request("GET", "/v1/images", timeout=LOOK_TIMEOUT)
        except (aiohttp.ClientError, OSError, TimeoutError, AgentError) as exc:
            log.info("zone %s: storage appliance did not answer: %s", zone_id, exc)
            report.unreachable.append(zone_id)
            return
        if not reply.ok or not isinstance(reply.body, dict):
            report.unreachable.append(zone_id)
            return
        items = reply.body.get("items") or {}
        store_open = reply.body.get("store") is not None
        push = False
        now = utcnow()
        async with self.orch.db.sessions() as session:
            rows = (
                await session.execute(
                    select(TemplateZone, Template)
                    .join(Template, Template.id == TemplateZone.template_id)
                    .where(TemplateZone.zone_id == zone_id, TemplateZone.live(), _watched())
                    .order_by(TemplateZone.id)
                )
            ).all()
            for tz, template in rows:
                seen = observe(tz, template, items.get(tz.uuid), store_open=store_open, now=now)
                if seen.action == "remove":
                    tz.remove()
                    report.removed += 1
                elif seen.action == "update" and _apply(tz, seen.fields):
                    report.updated += 1
                elif seen.action == "push":
                    push = True
            await session.commit()
        if push:
            report.pushed.append(zone_id)
            await push_zone(self.orch, zone_id)


def _watched():
    return or_(TemplateZone.deleting.is_(True), TemplateZone.download_state.in_(IN_FLIGHT))


def _apply(tz: TemplateZone, fields: dict) -> bool:
    """Set the fields that differ; whether any did."""
    changed_any = False
    for name, value in fields.items():
        if getattr(tz, name) != value:
            setattr(tz, name, value)
            changed_any = True
    return changed_any
