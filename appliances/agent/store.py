"""The last good document, kept on disk so a restarted agent converges again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from appliances.common.files import atomic_write, read_text


def document_hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class DocumentStore:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "applied.json"

    def load(self) -> dict | None:
        text = read_text(self.path)
        return json.loads(text) if text else None

    def save(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, separators=(",", ":")), mode=0o600)
