"""Console access tokens: what the management server gives a browser and the proxy opens.

A token names one console session: the instance, the VNC server on its host, the
VNC password, a session id, an expiry and a one-time nonce. It is sealed with
AES-256-GCM under a key the management server puts in the console proxy's
document, so the browser that carries it can neither read the password nor
change the target: any changed bit fails the tag. The proxy trusts nothing from
the URL but the token, refuses it after its expiry and, keeping the nonces it
has seen until they expire, a second time.

Layout (URL-safe base64, no padding)::

    version (1) | key id (4) | IV (12) | AES-GCM(JSON payload) + tag (16)

The key id (a hash of the key, not the key) lets the proxy pick the current or
the previous key during a rotation and say "unknown key" rather than "forged".
Version and key id are authenticated as associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_BYTES = 32
IV_BYTES = 12
KEY_ID_BYTES = 4
_HEADER = 1 + KEY_ID_BYTES + IV_BYTES
_AAD_PREFIX = b"skiff-console-token"
DEFAULT_TTL_S = 120
#: No token lives longer than this (the proxy keeps used nonces until expiry).
MAX_TTL_S = 24 * 3600
#: Longer than any honest token (the payload is a few hundred bytes).
MAX_TOKEN_CHARS = 4096
#: RFB passwords are at most 8 bytes; CloudStack keeps longer ones and VNC truncates.
MAX_PASSWORD_CHARS = 64

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOSTNAME_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class TokenError(ValueError):
    """The token cannot be used. ``reason`` is short and safe to show a client."""

    reason = "invalid token"


class TokenInvalid(TokenError):
    reason = "invalid token"


class TokenExpired(TokenError):
    reason = "token expired"


@dataclass(frozen=True)
class ConsoleGrant:
    """One console session as the management server authorised it."""

    instance_id: str
    host: str
    port: int
    password: str | None
    session_id: str
    expires: float  # Unix time, seconds
    nonce: str

    def __post_init__(self) -> None:
        _check(self)

    def public(self) -> dict:
        """What may be shown (status, logs): everything but the password."""
        data = asdict(self)
        data.pop("password")
        return data


def new_key() -> bytes:
    """A fresh token key (the management server keeps it and sends it to the proxy)."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """A key as carried in a document (standard base64 of 32 bytes)."""
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"a token key is {KEY_BYTES} bytes, got {len(key)}")
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(_AAD_PREFIX + b"/key-id/" + key).digest()[:KEY_ID_BYTES]


def issue(
    key: bytes,
    *,
    instance_id: str,
    host: str,
    port: int,
    password: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    session_id: str | None = None,
    now: float | None = None,
) -> tuple[str, ConsoleGrant]:
    """A new grant for one console session and its sealed token (management side)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
    grant = ConsoleGrant(
        instance_id=instance_id,
        host=host,
        port=port,
        password=password,
        session_id=session_id or secrets.token_hex(16),
        expires=round((time.time() if now is None else now) + ttl_s, 3),
        nonce=secrets.token_urlsafe(18),
    )
    return seal(grant, key), grant


def seal(grant: ConsoleGrant, key: bytes) -> str:
    """Encrypt and authenticate ``grant`` under ``key``."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a token key is {KEY_BYTES} bytes")
    kid = key_id(key)
    iv = os.urandom(IV_BYTES)
    head = bytes([VERSION]) + kid
    sealed = AESGCM(key).encrypt(iv, orjson.dumps(asdict(grant)), _AAD_PREFIX + head)
    return base64.urlsafe_b64encode(head + iv + sealed).rstrip(b"=").decode()


def open_token(token: str, keys: Sequence[bytes], now: float | None = None) -> ConsoleGrant:
    """The grant in ``token`` if one of ``keys`` sealed it and it has not expired.

    Raises TokenInvalid (malformed, unknown key, altered) or TokenExpired. Whether
    it was used before is the caller's to know (see the proxy's nonce store).
    """
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise TokenInvalid("token missing or too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("token is not base64url") from None
    if len(raw) < _HEADER + 16 or raw[0] != VERSION:
        raise TokenInvalid("token has an unknown version or is truncated")
    head, iv, sealed = raw[: 1 + KEY_ID_BYTES], raw[1 + KEY_ID_BYTES : _HEADER], raw[_HEADER:]
    key = next((k for k in keys if key_id(k) == head[1:]), None)
    if key is None:
        raise TokenInvalid("token was sealed with a key this proxy does not have")
    try:
        plain = AESGCM(key).decrypt(iv, sealed, _AAD_PREFIX + head)
    except InvalidTag:
        raise TokenInvalid("token failed authentication") from None
    try:
        data = orjson.loads(plain)
        grant = ConsoleGrant(**data)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        # Sealed by a holder of the key, yet malformed: a bug on the issuing side.
        raise TokenInvalid(f"token payload is malformed: {exc}") from None
    current = time.time() if now is None else now
    if current >= grant.expires:
        raise TokenExpired(f"token expired {current - grant.expires:.0f} s ago")
    if grant.expires - current > MAX_TTL_S:
        raise TokenInvalid("token lives longer than any token may")
    return grant


def _check(g: ConsoleGrant) -> None:
    """Field checks shared by issuing and opening: the proxy connects to host:port."""
    if not isinstance(g.instance_id, str) or not _ID_RE.match(g.instance_id):
        raise ValueError("instance_id must be an id (letters, digits, '.', '_', '-')")
    if not isinstance(g.session_id, str) or not _ID_RE.match(g.session_id):
        raise ValueError("session_id must be an id (letters, digits, '.', '_', '-')")
    if not isinstance(g.host, str) or not _valid_host(g.host):
        raise ValueError("host must be an IP address or a DNS name")
    if isinstance(g.port, bool) or not isinstance(g.port, int) or not 1 <= g.port <= 65535:
        raise ValueError("port must be 1-65535")
    if g.password is not None and (
        not isinstance(g.password, str) or len(g.password) > MAX_PASSWORD_CHARS
    ):
        raise ValueError(f"password must be a string of at most {MAX_PASSWORD_CHARS} chars")
    if isinstance(g.expires, bool) or not isinstance(g.expires, int | float):
        raise ValueError("expires must be a number (Unix time)")
    if not isinstance(g.nonce, str) or not _NONCE_RE.match(g.nonce):
        raise ValueError("nonce must be 16-64 URL-safe characters")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and bool(_HOSTNAME_RE.match(host))
