"""Declared checksums in CloudStack's forms: ``{SHA-512}hex``, ``{MD5}hex`` or bare hex.

A bare hex string names its algorithm by its length, as CloudStack's DigestHelper
does (32 MD5, 40 SHA-1, 56 SHA-224, 64 SHA-256, 96 SHA-384, 128 SHA-512). The
agent hashes while it writes, so the algorithm must be known before the first byte.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: CloudStack's names -> hashlib's names.
ALGORITHMS = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-224": "sha224",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}
_BY_HEX_LENGTH = {
    hashlib.new(name).digest_size * 2: cs_name for cs_name, name in ALGORITHMS.items()
}
_FORM = re.compile(r"^(?:\{(?P<alg>[A-Za-z0-9-]{1,10})\})?(?P<hex>[0-9A-Fa-f]{32,128})$")

#: Hashed when nothing was declared, so status can still report what arrived.
DEFAULT_ALGORITHM = "SHA-256"


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # CloudStack's name, e.g. "SHA-256"
    hexdigest: str  # lower case

    @property
    def hashlib_name(self) -> str:
        return ALGORITHMS[self.algorithm]

    def __str__(self) -> str:
        return f"{{{self.algorithm}}}{self.hexdigest}"

    def matches(self, hexdigest: str) -> bool:
        return hexdigest.lower() == self.hexdigest


def parse_checksum(text: str) -> Checksum:
    """``{SHA-512}ab...``, ``{md5}AB...`` or bare hex; raises ValueError naming the problem."""
    m = _FORM.match(text.strip())
    if m is None:
        raise ValueError(
            "a checksum must be hex digits, optionally prefixed by {MD5}, {SHA-1}, "
            "{SHA-224}, {SHA-256}, {SHA-384} or {SHA-512}"
        )
    hexdigest = m.group("hex").lower()
    alg = m.group("alg")
    if alg is None:
        found = _BY_HEX_LENGTH.get(len(hexdigest))
        if found is None:
            raise ValueError(
                f"a bare checksum of {len(hexdigest)} hex digits names no algorithm "
                "(32 MD5, 40 SHA-1, 56 SHA-224, 64 SHA-256, 96 SHA-384, 128 SHA-512)"
            )
        return Checksum(found, hexdigest)
    name = alg.upper()
    if name.startswith("SHA") and not name.startswith("SHA-"):
        name = f"SHA-{name[3:]}"  # {SHA256} as some users write it
    if name not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")
    want = hashlib.new(ALGORITHMS[name]).digest_size * 2
    if len(hexdigest) != want:
        raise ValueError(f"a {name} checksum has {want} hex digits, not {len(hexdigest)}")
    return Checksum(name, hexdigest)


def normalise(text: str) -> str:
    """The canonical form ``{ALG}hex`` (what the document stores and compares)."""
    return str(parse_checksum(text))


def new_hasher(checksum: Checksum | None):
    """A hashlib object for the declared algorithm (SHA-256 when none was declared)."""
    return hashlib.new(ALGORITHMS[checksum.algorithm if checksum else DEFAULT_ALGORITHM])
