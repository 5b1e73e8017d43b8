"""The last good document, kept on disk so a restarted agent converges again."""

from __future__ import annotations

import hashlib
from pathlib import Path

from appliances.common.files import atomic_write


def document_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class DocumentStore:
    """Keeps the document exactly as it was sent (JSON bytes), readable only by root:
    later roles carry secrets (VPN keys, certificates) in their documents."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "applied.json"

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, body: bytes) -> None:
        atomic_write(self.path, body, mode=0o600)
