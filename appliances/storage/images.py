"""The image table: every image the appliance knows, its state and progress.

Shared by the images service (downloads, deletions) and the transfer service
(browser uploads, extract). Both finish a transfer the same way
(:meth:`Images.complete`): wait for the last write and fsync, compare the
checksum, inspect the format, then install into the store. Until then the image
is Queued, Downloading or Uploading, afterwards Downloaded or Error; nothing else
reads as usable.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from appliances.storage import download
from appliances.storage.checksum import Checksum, parse_checksum
from appliances.storage.document import Image, Limits
from appliances.storage.download import DownloadError, Progress
from appliances.storage.formats import FormatError, inspect
from appliances.storage.sink import Sink, SinkError
from appliances.storage.store import ImageStore, Record

log = logging.getLogger(__name__)

QUEUED = "Queued"
DOWNLOADING = "Downloading"
DOWNLOADED = "Downloaded"
ERROR = "Error"
AWAITING_UPLOAD = "AwaitingUpload"
UPLOADING = "Uploading"
DELETED = "Deleted"
#: States in which bytes are arriving (a new transfer for the id must wait).
BUSY = (QUEUED, DOWNLOADING, UPLOADING)


class Conflict(RuntimeError):
    """The image cannot take this transfer now (HTTP 409)."""


@dataclass(eq=False)
class Item:
    id: str
    format: str
    source: str  # "download" or "upload"
    state: str
    url: str | None = None
    declared_checksum: str | None = None
    attempt: int = 0
    name: str | None = None
    error: str | None = None
    record: Record | None = None
    progress: Progress = field(default_factory=Progress)
    task: asyncio.Task | None = None

    @classmethod
    def installed(cls, record: Record) -> Item:
        return cls(
            record.id,
            record.format,
            record.source,
            DOWNLOADED,
            record.url,
            record.declared_checksum,
            name=record.name,
            record=record,
            progress=Progress(record.physical_size, record.physical_size),
        )

    def matches(self, image: Image) -> bool:
        """Would this item satisfy ``image`` as the document states it?"""
        return (
            self.format == image.format
            and self.url == image.url
            and self.declared_checksum == image.checksum
        )

    def status(self) -> dict:
        p, r = self.progress, self.record
        percent = 100 if self.state == DOWNLOADED else p.percent
        return {
            "id": self.id,
            "name": self.name,
            "format": self.format,
            "source": self.source,
            "state": self.state,
            "status_text": self.status_text(percent),
            "percent": percent,
            "bytes": p.bytes,
            "total_bytes": p.total,
            "error": self.error,
            "virtual_size": r.virtual_size if r else None,
            "physical_size": r.physical_size if r else None,
            "checksum": r.checksum if r else None,
            "declared_checksum": self.declared_checksum,
            "attempt": self.attempt,
            "requests": p.requests,
            "resumed": p.resumed,
            "restarts": p.restarts,
        }

    def status_text(self, percent: int) -> str:
        """CloudStack's status column (listTemplates ``status``)."""
        return {
            QUEUED: "Queued for download",
            DOWNLOADING: f"{percent}% Downloaded",
            UPLOADING: f"{percent}% Uploaded",
            AWAITING_UPLOAD: "Not uploaded yet",
            DOWNLOADED: "Upload Complete" if self.source == "upload" else "Download Complete",
            DELETED: "Deleted",
        }.get(self.state) or (self.error or "Error")


class Images:
    """The table, the store it describes and the downloads in flight."""

    def __init__(self, *, backoff: float = 0.5):
        self.store: ImageStore | None = None
        self.items: dict[str, Item] = {}
        self.limits = Limits()
        self.backoff = backoff
        self._slots = asyncio.Semaphore(self.limits.max_concurrent_downloads)
        self._client: aiohttp.ClientSession | None = None

    # -- driven by the images service ----------------------------------------------------

    def open_store(self, path: Path) -> None:
        """Switch to the store at ``path`` (created if needed): its complete images
        become the table; downloads for the previous store are cancelled."""
        store = ImageStore(path)
        store.prepare()
        records = store.scan(tidy=True)
        self.cancel_all()
        self.store = store
        self.items = {i: Item.installed(r) for i, r in records.items()}

    def set_limits(self, limits: Limits) -> None:
        if limits.max_concurrent_downloads != self.limits.max_concurrent_downloads:
            self._slots = asyncio.Semaphore(limits.max_concurrent_downloads)
        self.limits = limits

    def start_download(self, image: Image) -> Item:
        self._cancel(image.id)
        item = Item(
            image.id,
            image.format,
            "download",
            QUEUED,
            image.url,
            image.checksum,
            image.attempt,
            image.name,
        )
        self.items[image.id] = item
        item.task = asyncio.create_task(self._download(item), name=f"download-{image.id}")
        return item

    def await_upload(self, image: Image) -> Item:
        self._cancel(image.id)
        item = Item(
            image.id,
            image.format,
            "upload",
            AWAITING_UPLOAD,
            declared_checksum=image.checksum,
            attempt=image.attempt,
            name=image.name,
        )
        self.items[image.id] = item
        return item

    def delete(self, image_id: str, *, keep_entry: bool) -> None:
        """Cancel any transfer of the image and remove it from the store; with
        ``keep_entry`` its status stays as Deleted (the document still names it).
        An OSError leaves the entry in place for the caller to mark."""
        item = self.items.get(image_id)
        if item is not None and item.task is not None:
            item.task.cancel()
        if self.store is not None:
            self.store.delete(image_id)
        self.items.pop(image_id, None)
        if keep_entry:
            self.items[image_id] = Item(
                image_id,
                item.format if item else "RAW",
                item.source if item else "download",
                DELETED,
            )

    def _cancel(self, image_id: str) -> None:
        old = self.items.get(image_id)
        if old is not None and old.task is not None:
            old.task.cancel()

    def cancel_all(self) -> None:
        for item in self.items.values():
            if item.task is not None:
                item.task.cancel()

    async def close(self) -> None:
        tasks = [i.task for i in self.items.values() if i.task is not None]
        self.cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- uploads (the transfer service) --------------------------------------------------

    def begin_upload(self, image_id: str, fmt: str, declared: str | None, name: str | None) -> Item:
        """An Uploading item for a signed upload, or Conflict."""
        if self.store is None:
            raise Conflict("the image store is not configured yet")
        current = self.items.get(image_id)
        if current is not None:
            if current.state == DELETED:
                raise Conflict(f"image {image_id} was deleted")
            if current.source == "download":
                raise Conflict(f"image {image_id} is registered for download, not upload")
            if current.state in BUSY or current.state == DOWNLOADED:
                raise Conflict(f"image {image_id} is already {current.state}")
            if current.format != fmt:
                raise Conflict(f"image {image_id} is registered as {current.format}, not {fmt}")
            declared = declared or current.declared_checksum
        item = Item(
            image_id,
            fmt,
            "upload",
            UPLOADING,
            declared_checksum=declared,
            attempt=current.attempt if current else 0,
            name=(current.name if current and current.name else name),
        )
        self.items[image_id] = item
        return item

    def fail(self, item: Item, message: str) -> None:
        if self.items.get(item.id) is item:
            item.state, item.error = ERROR, message
            log.warning("image %s: %s", item.id, message)

    # -- finishing a transfer ------------------------------------------------------------

    async def complete(self, item: Item, sink: Sink) -> None:
        """Verify and install what ``sink`` received; Error with a clear text otherwise.
        The sink's temp file never stays behind."""
        try:
            digest = await sink.finish()
            checksum = sink.checksum
            if checksum is not None and not checksum.matches(digest):
                raise FormatError(
                    f"checksum mismatch: declared {checksum}, "
                    f"received {{{checksum.algorithm}}}{digest}"
                )
            info = await asyncio.to_thread(inspect, sink.path, item.format)
            stored = Checksum(checksum.algorithm if checksum else "SHA-256", digest)
            record = Record(
                item.id,
                item.format,
                item.source,
                item.url,
                item.declared_checksum,
                str(stored),
                info.virtual_size,
                info.physical_size,
                item.name,
            )
            if self.items.get(item.id) is not item or self.store is None:
                return  # deleted (or the store changed) while it arrived
            # Synchronous on purpose: a deletion cannot run between check and install.
            self.store.install(sink.path, record)
            item.record, item.state, item.error = record, DOWNLOADED, None
            item.progress.bytes = item.progress.total = info.physical_size
            log.info(
                "image %s installed: %s, %d bytes, virtual %d",
                item.id,
                item.format,
                info.physical_size,
                info.virtual_size,
            )
        except (FormatError, SinkError, OSError) as exc:
            self.fail(item, str(exc))
        finally:
            sink.abort()

    def new_sink(self, item: Item) -> Sink:
        assert self.store is not None  # noqa: S101 - callers checked
        checksum = parse_checksum(item.declared_checksum) if item.declared_checksum else None
        return Sink(self.store.temp_path(item.id), checksum)

    async def _download(self, item: Item) -> None:
        async with self._slots:
            if self.items.get(item.id) is not item or self.store is None:
                return
            item.state = DOWNLOADING
            try:
                sink = self.new_sink(item)
            except OSError as exc:
                self.fail(item, f"cannot create the temp file: {exc}")
                return
            try:
                await download.fetch(
                    self._session(),
                    item.url or "",
                    sink,
                    max_bytes=self.limits.max_download_bytes,
                    progress=item.progress,
                    retries=self.limits.download_retries,
                    backoff=self.backoff,
                )
            except (DownloadError, SinkError, OSError) as exc:
                sink.abort()
                self.fail(item, str(exc))
                return
            except BaseException:
                sink.abort()
                raise
            await self.complete(item, sink)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = download.session()
        return self._client

    # -- reading ---------------------------------------------------------------------------

    def ready(self, image_id: str) -> tuple[Item, Path] | None:
        item = self.items.get(image_id)
        if item is None or item.state != DOWNLOADED or item.record is None or not self.store:
            return None
        return item, self.store.path_of(item.record)

    def status(self) -> dict:
        counts: dict[str, int] = {}
        for item in self.items.values():
            counts[item.state] = counts.get(item.state, 0) + 1
        return {
            "store": str(self.store.root) if self.store else None,
            "counts": counts,
            "items": {i: item.status() for i, item in sorted(self.items.items())},
        }
