"""Files only their owner may read, never readable by others even for a moment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def stage_private_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to a 0600 temporary file beside ``path``; returns it.

    O_EXCL and O_NOFOLLOW: the file is new, not one someone else prepared.
    ``publish`` renames it into place.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def write_private_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` with mode 0600, replacing it atomically."""
    publish(stage_private_json(path, data), path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
