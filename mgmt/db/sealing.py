"""Secrets kept in database columns, sealed with AES-256-GCM under one key per database.

VPN users' passwords and the IPsec preshared keys must reach the routers as
they are, so they cannot be hashed; they are sealed instead. The key lives in
the ``keystore`` table under ``KEY_NAME``, like the appliance CA
(mgmt.orchestration.pki): the first server that needs it creates it, a server
that loses that race reads the winner's, and every server of the database
shares it. A reader of the other tables (a dump of one table, a backup, a
listing) sees no secret; a copy of the whole database carries the key too.

A sealed value is ``sealed:v1:<key id>:<base64url(nonce | ciphertext | tag)>``.
The associated data is the value's *purpose* (``table.column``), so a value
copied into another column does not open. The key id (8 hex digits of the
key's SHA-256) lets a value sealed under another key be told apart from a
damaged one. Revision 0008 seals with this module: the v1 format is frozen
(add a v2 beside it rather than change it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mgmt.db.models.compute import KeystoreEntry

KEY_NAME = "column-secrets"
PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12

#: Purposes (associated data) of the sealed columns.
RA_PSK = "remote_access_vpns.preshared_key"
VPN_PASSWORD = "vpn_users.password"
S2S_PSK = "vpn_customer_gateways.ipsec_psk"
JOB_RESULT = "async_jobs.result"


class SealError(Exception):
    """A sealed value that cannot be opened: no key, another key, or damaged."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"the keystore's {KEY_NAME!r} entry is not base64") from None
    if len(key) != KEY_BYTES:
        raise SealError(f"the keystore's {KEY_NAME!r} entry is {len(key)} bytes, not {KEY_BYTES}")
    return key


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class Sealer:
    """Seals and opens column values with one database's key."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise SealError(f"a sealing key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def seal(self, text: str, purpose: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        box = self._aead.encrypt(nonce, text.encode("utf-8"), purpose.encode("ascii"))
        token = base64.urlsafe_b64encode(nonce + box).decode("ascii")
        return f"{PREFIX}{self.key_id}:{token}"

    def unseal(self, value: str, purpose: str) -> str:
        """The clear text of ``value``; SealError says why it cannot be had."""
        if not is_sealed(value):
            raise SealError(f"{purpose} holds a value that is not sealed")
        sealed_by, _, token = value.removeprefix(PREFIX).partition(":")
        if sealed_by != self.key_id:
            raise SealError(
                f"{purpose} was sealed with key {sealed_by}, but the database's key "
                f"({KEY_NAME!r} in the keystore) is {self.key_id}: the key it was sealed "
                "with was replaced or lost; set the secret again"
            )
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
            clear = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode("ascii")
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError(
                f"{purpose} holds a sealed value that does not open with key {self.key_id} "
                "(damaged, or sealed for another column)"
            ) from None
        return clear.decode("utf-8")


class NoKey:
    """Stands for a Sealer where no key was loaded: every use says so."""

    key_id = None

    def seal(self, text: str, purpose: str) -> str:
        raise SealError(f"no key to seal {purpose} with (the keystore's {KEY_NAME!r})")

    def unseal(self, value: str, purpose: str) -> str:
        raise SealError(f"no key to open {purpose} with (the keystore's {KEY_NAME!r})")


async def load_sealer(db) -> Sealer:
    """The database's sealer; its key is created on first use (one per database)."""

    async def stored() -> str | None:
        async with db.sessions() as session:
            return await session.scalar(
                select(KeystoreEntry.private_key).where(
                    KeystoreEntry.name == KEY_NAME, KeystoreEntry.live()
                )
            )

    text = await stored()
    if text is None:
        try:
            async with db.sessions() as session:
                # No certificate goes with a symmetric key: the column stays empty.
                session.add(
                    KeystoreEntry(name=KEY_NAME, certificate="", private_key=encode_key(new_key()))
                )
                await session.commit()
        except IntegrityError:
            pass  # another server created it first: use theirs
        text = await stored()
        assert text is not None
    return Sealer(decode_key(text))
