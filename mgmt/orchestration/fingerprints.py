"""Keyed fingerprints of appliance documents, the only form the database keeps.

A document carries secrets (VPN pre-shared keys and user passwords, the VRRP
password, instance passwords). A bare SHA-256 of it in the database would let
whoever holds a copy of the database, and so every other field of the document,
test guesses of a weak secret offline. So the two fingerprints a router or
system-VM row keeps are HMACs keyed from the appliance CA's private key (which
lives in the keystore, and which every server of the database shares):

- ``document(data)``: the content without its generation, to skip a push that
  would change nothing;
- ``reported(sha256_hex)``: what the agent reports (the SHA-256 of the bytes it
  applied) as the server keeps it; ``sent(body)`` is the same for the bytes sent.

Agents keep reporting the plain SHA-256 of what they hold: they hold the secrets
anyway. Rows written before these were keyed compare unequal once, so each
appliance gets its (unchanged) document pushed again once after an upgrade.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

LABEL = b"skiff document fingerprint v1"


class Fingerprints:
    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, LABEL, hashlib.sha256).digest()

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def document(self, data: dict[str, Any]) -> str:
        body = {k: v for k, v in data.items() if k != "generation"}
        return self._mac(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())

    def reported(self, sha256_hex: str | None) -> str | None:
        """An agent's reported document hash, keyed (None stays None)."""
        if not isinstance(sha256_hex, str) or not sha256_hex:
            return None
        return self._mac(b"applied:" + sha256_hex.encode())

    def sent(self, body: bytes) -> str:
        """What ``reported`` gives once the agent applied ``body``."""
        return self._mac(b"applied:" + hashlib.sha256(body).hexdigest().encode())
