"""Which passwords the password server has already handed out, kept across restarts.

A password is handed out once. What is remembered is a keyed hash (HMAC-SHA256
with a random key of this router) of the instance id and the password, never
the password: a new password for the same instance (a reset) has another hash,
so it is handed out once again, and an agent restart does not hand out the
old one a second time.

Each hand-out appends one line and fsyncs before the guest gets its answer, so
a crash cannot hand a password out twice; a torn last line is ignored when
reading. :meth:`PasswordLedger.compact` rewrites the file atomically with only
the hashes the current document still needs, so it stays as small as the
number of instances.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from appliances.common.files import atomic_write, fsync_dir

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
KEY_FILE = "ledger.key"
LEDGER_FILE = "handed-out"


class PasswordLedger:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._key: bytes | None = None
        self._handed: set[str] = set()
        self._loaded = False

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_FILE

    def load(self) -> None:
        """Read the key (creating it once) and the hashes handed out so far."""
        if self._loaded:
            return
        key_path = self.directory / KEY_FILE
        try:
            key = bytes.fromhex(key_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            key = b""
        if len(key) != 32:
            key = secrets.token_bytes(32)
            atomic_write(key_path, key.hex() + "\n", mode=0o600)
        self._key = key
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        self._handed = {line for line in lines if _DIGEST.match(line)}
        self._loaded = True

    def digest(self, instance_id: str, password: str) -> str:
        self.load()
        assert self._key is not None
        message = instance_id.encode() + b"\0" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def handed_out(self, digest: str) -> bool:
        self.load()
        return digest in self._handed

    def record(self, digest: str) -> None:
        """Remember ``digest`` durably (appended and fsynced) before answering."""
        self.load()
        if digest in self._handed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{digest}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.directory)
        self._handed.add(digest)

    def compact(self, keep: Iterable[str]) -> None:
        """Forget every hash not in ``keep`` (instances or passwords that are gone)."""
        self.load()
        kept = self._handed & set(keep)
        if kept == self._handed and self.path.exists():
            return
        atomic_write(self.path, "".join(f"{d}\n" for d in sorted(kept)), mode=0o600)
        self._handed = kept
