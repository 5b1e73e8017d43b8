"""The last good document, kept on disk so a restarted agent converges again."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from appliances.common.files import atomic_write, fsync_dir


def document_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class DocumentStore:
    """Keeps the document exactly as it was sent (JSON bytes), readable only by root:
    later roles carry secrets (VPN keys, certificates) in their documents.

    ``stage`` writes and fsyncs a pending copy in a worker thread, so a large
    document is made durable while the services apply it; ``commit`` renames it
    into place once they have succeeded, ``discard`` drops it when they failed.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "applied.json"
        self.pending = self.path.with_name("applied.json.pending")

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, body: bytes) -> None:
        atomic_write(self.path, body, mode=0o600)

    def stage(self, body: bytes) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(None, self._write_pending, body)

    def _write_pending(self, body: bytes) -> None:
        fd = os.open(self.pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self) -> None:
        os.replace(self.pending, self.path)
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        self.pending.unlink(missing_ok=True)
