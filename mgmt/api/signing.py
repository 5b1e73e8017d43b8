"""CloudStack request signatures (HMAC-SHA1), as the server checks them.

1. every parameter except ``signature``; 2. sorted by name (case-sensitive,
original case); 3. ``name=enc(value)`` joined by ``&``, where enc is Java's
URLEncoder with ``+`` as ``%20``; 4. the whole string lower-cased, HMAC-SHA1
with the user's secret key, base64.

Clients differ in step 3: Java's encoder escapes ``~``, Python's ``quote`` (used
by ``cs`` and libcloud) leaves it raw, and libcloud also leaves ``[`` and ``]``
raw and sorts by lower-cased name. Skiff accepts the canonical form and these
variants; they only differ for values containing those characters, so a
forgery gains nothing: every variant still needs the secret key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

EXPIRES_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z")


def java_encode(value: str) -> str:
    """java.net.URLEncoder.encode(value, "UTF-8").replace("+", "%20")."""
    return quote(value, safe="*").replace("~", "%7E")


def _python_encode(value: str) -> str:
    return quote(value, safe="*")


def _libcloud_encode(value: str) -> str:
    return quote(value, safe="*[]")


#: (encoder, sort key) pairs tried in order; the first is CloudStack's own.
VARIANTS: tuple[tuple[Callable[[str], str], Callable[[str], str] | None], ...] = (
    (java_encode, None),
    (_python_encode, None),
    (_libcloud_encode, str.lower),
)


def canonical(params: Mapping[str, str], encode=java_encode, sort_key=None) -> str:
    items = sorted(
        ((k, v) for k, v in params.items() if k.lower() != "signature"),
        key=(lambda kv: sort_key(kv[0])) if sort_key else (lambda kv: kv[0]),
    )
    return "&".join(f"{k}={encode(v)}" for k, v in items).lower()


def sign(params: Mapping[str, str], secret: str) -> str:
    """The signature CloudStack expects for ``params``."""
    return _digest(canonical(params), secret)


def _digest(text: str, secret: str) -> str:
    mac = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def verify(params: Mapping[str, str], secret: str, signature: str) -> bool:
    """True when ``signature`` matches one accepted way of signing ``params``."""
    tried: set[str] = set()
    ok = False
    for encode, sort_key in VARIANTS:
        text = canonical(params, encode, sort_key)
        if text in tried:
            continue
        tried.add(text)
        # Compare every variant (no early exit) in constant time per comparison.
        ok |= hmac.compare_digest(_digest(text, secret), signature)
    return ok


def parse_expires(value: str) -> datetime:
    """CloudStack's expires format, e.g. 2026-11-21T05:42:57+0000."""
    for fmt in EXPIRES_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"expires {value!r} is not like 2026-11-21T05:42:57+0000")
