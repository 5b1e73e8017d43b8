"""What the management server signs and the storage appliance checks.

Both sides import this module: the server to make upload parameters and extract
URLs, the appliance to check them. The key is the document's ``transfer.key``.

**Browser upload** (CloudStack's getUploadParamsForTemplate / getUploadParamsForIso
contract). The server answers ``postURL``, ``metadata``, ``expires`` and
``signature``; the browser POSTs the file to ``postURL`` as multipart/form-data with
the headers ``X-signature``, ``X-metadata`` and ``X-expires``. As in CloudStack the
signature is base64(HMAC-SHA1(key, metadata + postURL + expires)) and ``expires`` is
an ISO 8601 UTC time (``2026-11-21T05:42:57.000Z``). Unlike CloudStack, whose
metadata is an encrypted command, Skiff's metadata is base64url JSON
(:class:`UploadMetadata`): the HMAC makes it tamper-proof and it holds no secret.

**Extract** (extractTemplate / extractIso). The URL is ``<base>/extract/<token>``;
the token is ``base64url(JSON {"id", "exp"}) "." base64url(HMAC-SHA256(k, payload))``
with ``k = HMAC-SHA256(key, "skiff extract v1")``, so an upload signature can
never pass as a token. ``exp`` is a Unix time: the expiry travels inside the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

_EXTRACT_CONTEXT = b"skiff extract v1"


class SignatureError(ValueError):
    """A signature, token or expiry did not check out; the message says which."""


@dataclass(frozen=True)
class UploadMetadata:
    """What one signed upload may deliver."""

    id: str
    format: str  # QCOW2, RAW, VHD or ISO
    max_bytes: int
    checksum: str | None = None  # {ALG}hex or bare hex, verified after the upload
    name: str | None = None  # shown in status only

    def encode(self) -> str:
        data = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)
        return _b64url(data.encode())

    @classmethod
    def decode(cls, text: str) -> UploadMetadata:
        try:
            raw = json.loads(_unb64url(text))
            meta = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"metadata is not valid: {exc}") from None
        if not isinstance(meta.id, str) or not isinstance(meta.format, str):
            raise SignatureError("metadata id and format must be strings")
        if not isinstance(meta.max_bytes, int) or meta.max_bytes <= 0:
            raise SignatureError("metadata max_bytes must be a positive integer")
        return meta


@dataclass(frozen=True)
class UploadParams:
    """getUploadParamsForTemplate's answer (its field names)."""

    postURL: str  # noqa: N815 - CloudStack's name
    metadata: str
    expires: str
    signature: str

    def headers(self) -> dict[str, str]:
        """The headers the browser sends with the POST."""
        return {
            "X-signature": self.signature,
            "X-metadata": self.metadata,
            "X-expires": self.expires,
        }


def format_expires(when: float) -> str:
    """``2026-11-21T05:42:57.000Z`` (as Joda's DateTime.toString in UTC)."""
    dt = datetime.fromtimestamp(when, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_expires(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SignatureError(f"expires {text[:40]!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise SignatureError("expires must carry a time zone (Z or +hh:mm)")
    return dt.timestamp()


def upload_signature(key: str, metadata: str, post_url: str, expires: str) -> str:
    mac = hmac.new(key.encode(), (metadata + post_url + expires).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def upload_params(
    key: str, post_url: str, meta: UploadMetadata, *, ttl: float = 3600, now: float | None = None
) -> UploadParams:
    """Parameters for one browser upload to ``post_url`` (``<base>/upload/<id>``)."""
    metadata = meta.encode()
    expires = format_expires((time.time() if now is None else now) + ttl)
    return UploadParams(
        post_url, metadata, expires, upload_signature(key, metadata, post_url, expires)
    )


def check_upload(
    key: str,
    post_url: str,
    signature: str,
    metadata: str,
    expires: str,
    *,
    now: float | None = None,
) -> UploadMetadata:
    """The metadata of a valid, unexpired upload; SignatureError otherwise."""
    if not (signature and metadata and expires):
        raise SignatureError("X-signature, X-metadata and X-expires are all required")
    want = upload_signature(key, metadata, post_url, expires)
    if not hmac.compare_digest(want.encode(), signature.strip().encode()):
        raise SignatureError("signature validation failed")
    if parse_expires(expires) <= (time.time() if now is None else now):
        raise SignatureError("the upload URL has expired")
    return UploadMetadata.decode(metadata)


def extract_token(key: str, item_id: str, expires_at: float) -> str:
    payload = _b64url(
        json.dumps({"id": item_id, "exp": int(expires_at)}, separators=(",", ":")).encode()
    )
    return f"{payload}.{_b64url(_extract_mac(key, payload))}"


def check_extract_token(key: str, token: str, *, now: float | None = None) -> str:
    """The item id of a valid, unexpired token; SignatureError otherwise."""
    payload, _, mac = token.partition(".")
    try:
        given = _unb64url(mac)
    except ValueError:
        raise SignatureError("token is malformed") from None
    if not payload or not hmac.compare_digest(given, _extract_mac(key, payload)):
        raise SignatureError("token signature is not valid")
    try:
        data = json.loads(_unb64url(payload))
        item_id, exp = data["id"], data["exp"]
    except (ValueError, KeyError, TypeError):
        raise SignatureError("token payload is malformed") from None
    if not isinstance(item_id, str) or not isinstance(exp, int):
        raise SignatureError("token payload is malformed")
    if exp <= (time.time() if now is None else now):
        raise SignatureError("the extract URL has expired")
    return item_id


def _extract_mac(key: str, payload: str) -> bytes:
    subkey = hmac.new(key.encode(), _EXTRACT_CONTEXT, hashlib.sha256).digest()
    return hmac.new(subkey, payload.encode(), hashlib.sha256).digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {exc}") from None
