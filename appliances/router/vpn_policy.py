"""CloudStack IKE/ESP policy strings -> strongSwan proposals, with a judgement of strength.

CloudStack writes a policy as ``<cipher>-<hash>[;<dh group>]`` and several of them
separated by ``,``: ``aes128-sha1;modp1536``, ``3des-md5``, ``aes256-sha256;modp2048``.
strongSwan wants ``aes128-sha1-modp1536``: for IKE the hash gives both the integrity
algorithm and the PRF, for ESP the group (if any) is the PFS group.

Weak algorithms are refused unless the connection says ``allow_weak``: DES and 3DES
(64-bit blocks, Sweet32), MD5, and the MODP groups 768 and 1024 (Logjam-range).
SHA-1 is *not* refused: IKE and ESP use it only inside HMAC (integrity and PRF), whose
security does not rest on collision resistance; RFC 8221 and RFC 8247 still list
HMAC-SHA1 as MUST-, and it is CloudStack's default policy (``aes128-sha1;modp1536``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CIPHERS = {
    "aes128": "aes128",
    "aes192": "aes192",
    "aes256": "aes256",
    "aes128gcm16": "aes128gcm16",
    "aes256gcm16": "aes256gcm16",
    "3des": "3des",
    "des": "des",
}
#: AEAD ciphers carry their own integrity: no hash may follow them.
AEAD = {"aes128gcm16", "aes256gcm16"}
HASHES = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
GROUPS = {
    "modp768": "modp768",
    "modp1024": "modp1024",
    "modp1536": "modp1536",
    "modp2048": "modp2048",
    "modp3072": "modp3072",
    "modp4096": "modp4096",
    "modp6144": "modp6144",
    "modp8192": "modp8192",
    "ecp256": "ecp256",
    "ecp384": "ecp384",
    "ecp521": "ecp521",
    "curve25519": "curve25519",
}
WEAK = {
    "des": "DES has a 56-bit key",
    "3des": "3DES has 64-bit blocks (Sweet32)",
    "md5": "MD5 is broken",
    "modp768": "a 768-bit MODP group is breakable",
    "modp1024": "a 1024-bit MODP group is within reach of a nation-state (Logjam)",
}
MAX_PROPOSALS = 16
_PROPOSAL_RE = re.compile(r"^([a-z0-9]+)(?:-([a-z0-9]+))?(?:;([a-z0-9]+))?$")


class PolicyError(ValueError):
    """A policy string cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Proposal:
    cipher: str
    hash: str | None
    group: str | None

    def strongswan(self, kind: str) -> str:
        hash_ = self.hash
        if hash_ and self.cipher in AEAD:
            hash_ = f"prf{hash_}"  # IKE with AEAD: the hash is the PRF only
        return "-".join(part for part in (self.cipher, hash_, self.group) if part)

    def weaknesses(self) -> list[str]:
        return [
            f"{alg}: {WEAK[alg]}" for alg in (self.cipher, self.hash, self.group) if alg in WEAK
        ]


def parse(policy: str, *, kind: str) -> list[Proposal]:
    """Parse a CloudStack policy string; ``kind`` is "ike" or "esp" (IKE needs a group)."""
    parts = [p.strip().lower() for p in policy.split(",")]
    if not parts or len(parts) > MAX_PROPOSALS:
        raise PolicyError(f"{kind} policy {policy!r}: give 1 to {MAX_PROPOSALS} proposals")
    out = []
    for part in parts:
        m = _PROPOSAL_RE.match(part)
        if not m:
            raise PolicyError(
                f"{kind} policy {policy!r}: {part!r} is not <cipher>-<hash>[;<group>]"
            )
        cipher, hash_, group = m.groups()
        if cipher not in CIPHERS:
            raise PolicyError(
                f"{kind} policy {policy!r}: unknown cipher {cipher!r} (known: {', '.join(CIPHERS)})"
            )
        if cipher in AEAD:
            if hash_ is not None and kind == "esp":
                raise PolicyError(
                    f"{kind} policy {policy!r}: {cipher} is an AEAD cipher; give no hash with it"
                )
            if hash_ is None and kind == "ike":
                raise PolicyError(f"ike policy {policy!r}: {cipher} needs a hash for the PRF")
        elif hash_ is None:
            raise PolicyError(
                f"{kind} policy {policy!r}: {cipher} needs a hash ({', '.join(HASHES)})"
            )
        if hash_ is not None and hash_ not in HASHES:
            raise PolicyError(
                f"{kind} policy {policy!r}: unknown hash {hash_!r} (known: {', '.join(HASHES)})"
            )
        if group is not None and group not in GROUPS:
            raise PolicyError(
                f"{kind} policy {policy!r}: unknown DH group {group!r} (known: {', '.join(GROUPS)})"
            )
        if kind == "ike" and group is None:
            raise PolicyError(
                f"ike policy {policy!r}: {part!r} has no DH group (e.g. aes128-sha256;modp2048)"
            )
        out.append(
            Proposal(
                CIPHERS[cipher],
                HASHES.get(hash_) if hash_ else None,
                GROUPS.get(group) if group else None,
            )
        )
    return out


def to_strongswan(policy: str, *, kind: str, allow_weak: bool = False) -> list[str]:
    """strongSwan proposals for a policy string; PolicyError for unknown or (unless
    allow_weak) weak algorithms."""
    proposals = parse(policy, kind=kind)
    if not allow_weak:
        weak = [w for p in proposals for w in p.weaknesses()]
        if weak:
            raise PolicyError(
                f"{kind} policy {policy!r} uses weak algorithms ("
                f"{'; '.join(dict.fromkeys(weak))}); set allow_weak to use it "
                "anyway"
            )
    return list(dict.fromkeys(p.strongswan(kind) for p in proposals))
