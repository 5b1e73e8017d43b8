"""The image store on disk: ``<id>.<ext>`` beside a record ``<id>.json``.

An image exists only once its record does. Installing renames the verified temp
file (``.partial/``, same file system) into place and then writes the record
atomically, both fsynced; deleting removes the record first. So a crash at any
point leaves either a complete, verified image with its record or a file without
one, which the next scan removes: nothing half-written is ever reported.

The agent owns the directory but touches only names it makes: ``.partial/`` and
files named after a valid image id with one of its extensions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from appliances.common.files import atomic_write, fsync_dir
from appliances.storage.formats import EXTENSIONS

log = logging.getLogger(__name__)

PARTIAL = ".partial"
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_IMAGE_NAME = re.compile(rf"^({_ID})\.({'|'.join(sorted(set(EXTENSIONS.values())))})$")
_RECORD_NAME = re.compile(rf"^({_ID})\.json$")


@dataclass(frozen=True)
class Record:
    """What the store knows of an installed image (its ``<id>.json``)."""

    id: str
    format: str
    source: str  # "download" or "upload"
    url: str | None
    declared_checksum: str | None  # {ALG}hex as declared, or None
    checksum: str  # {ALG}hex of the bytes stored
    virtual_size: int
    physical_size: int
    name: str | None = None

    @property
    def file(self) -> str:
        return f"{self.id}.{EXTENSIONS[self.format]}"


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.partial = self.root / PARTIAL

    def prepare(self) -> None:
        """Create the folders and drop what an earlier run left half-done."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.partial.is_dir():
            shutil.rmtree(self.partial)
        self.partial.mkdir(mode=0o700)

    def scan(self, *, tidy: bool = False) -> dict[str, Record]:
        """Every complete image by id. With ``tidy``, image files without a valid
        record (a crash between rename and record) are removed."""
        records: dict[str, Record] = {}
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return records
        for name in names:
            m = _RECORD_NAME.match(name)
            if m is None:
                continue
            record = self._load(self.root / name, m.group(1))
            if record is not None:
                records[record.id] = record
        if tidy:
            wanted = {r.file for r in records.values()}
            for name in names:
                if _IMAGE_NAME.match(name) and name not in wanted:
                    log.warning("removing %s: it has no record (an interrupted install)", name)
                    (self.root / name).unlink(missing_ok=True)
        return records

    def _load(self, path: Path, image_id: str) -> Record | None:
        try:
            record = Record(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable record %s: %s", path, exc)
            return None
        if record.id != image_id or record.format not in EXTENSIONS:
            log.warning("ignoring record %s: it names %r", path, record.id)
            return None
        try:
            size = (self.root / record.file).stat().st_size
        except FileNotFoundError:
            log.warning("ignoring record %s: %s is missing", path, record.file)
            return None
        if size != record.physical_size:
            log.warning(
                "ignoring record %s: %s has %d bytes, not %d",
                path,
                record.file,
                size,
                record.physical_size,
            )
            return None
        return record

    def temp_path(self, image_id: str) -> Path:
        return self.partial / f"{image_id}.{os.urandom(6).hex()}.part"

    def path_of(self, record: Record) -> Path:
        return self.root / record.file

    def install(self, temp: Path, record: Record) -> None:
        """Move a verified temp file into place, then write its record (both durable).
        Replaces an image of the same id, and drops its file under another format."""
        self._remove_record(record.id)
        os.replace(temp, self.root / record.file)
        for other in self._files(record.id):
            if other.name != record.file:
                other.unlink(missing_ok=True)
        fsync_dir(self.root)
        atomic_write(self.root / f"{record.id}.json", json.dumps(asdict(record), indent=1))

    def delete(self, image_id: str) -> bool:
        """Remove an image (record first); True when there was something to remove."""
        found = self._remove_record(image_id)
        for path in self._files(image_id):
            path.unlink(missing_ok=True)
            found = True
        if found:
            fsync_dir(self.root)
        return found

    def _remove_record(self, image_id: str) -> bool:
        path = self.root / f"{image_id}.json"
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _files(self, image_id: str) -> list[Path]:
        return [
            p
            for ext in sorted(set(EXTENSIONS.values()))
            if (p := self.root / f"{image_id}.{ext}").exists()
        ]
