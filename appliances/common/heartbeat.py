"""Signed heartbeats from an agent to the management server: the wire format.

An agent POSTs, every interval, a small JSON object (``Heartbeat``) to the
heartbeat URL its host driver gave it. The body is signed with the agent's own
private key, the key of the certificate the appliance CA issued it (EC P-256,
appliances.common.certs), and the certificate travels with it::

    POST /skiff/v1/heartbeat HTTP/1.1
    Content-Type: application/json
    X-Skiff-Certificate: <base64 of the agent's certificate, PEM>
    X-Skiff-Signature: <base64 of the ECDSA-SHA256 signature (DER) of the exact body bytes>

    {"appliance_id": "r-7-VM", "role": "router", "applied_generation": 12,
     "document_hash": "<sha256 of the applied document's bytes>", "converged": true,
     "last_error": null, "version": "0.1.0", "uptime_s": 81.5, "sequence": 1732..,
     "sent_at": 1732..., "interval": 2.0, "redundant_state": null,
     "services": {"dnsmasq": {"state": "ok", "healthy": true, "last_error": null}, ...}}

``services`` is each service's own view (no live query of its daemon), so the
server's health checks stay current without polling the agent.

The signature is detached and over the bytes as sent, so the receiver checks
exactly what it parses; no canonical JSON is needed. ``verify`` checks what
needs no database: the headers decode, the signature matches the body, the
body is a well-formed heartbeat, the certificate names the body's appliance id
and chains to the appliance CA (as a server certificate, valid now), and the
send time is within ``MAX_SKEW_S`` of the receiver's clock. The receiver then
checks that the appliance is one of its routers and that the sequence number is
higher than the last it accepted (replay). Sequence numbers start at the
agent's wall clock in microseconds and go up by one per heartbeat, so they keep
growing across agent restarts without a counter the server has to reset.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CERT_HEADER = "X-Skiff-Certificate"
SIGNATURE_HEADER = "X-Skiff-Signature"
PATH = "/skiff/v1/heartbeat"
#: How far a heartbeat's send time may be from the receiver's clock.
MAX_SKEW_S = 120.0
MAX_BODY = 64 * 1024
MAX_ERROR = 500
MAX_SERVICE_ERROR = 200
MAX_SERVICES = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_SERVICE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ServiceHealth(BaseModel):
    """One service as the heartbeat reports it."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    state: str = Field(max_length=16)
    healthy: bool
    last_error: str | None = Field(default=None, max_length=MAX_SERVICE_ERROR)


class Heartbeat(BaseModel):
    """What an agent says about itself (strict types: no coercion of strings to numbers)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    appliance_id: str
    role: str = Field(max_length=32)
    applied_generation: int | None = Field(default=None, ge=0)
    document_hash: str | None = None
    converged: bool
    last_error: str | None = Field(default=None, max_length=MAX_ERROR)
    version: str = Field(max_length=64)
    uptime_s: float = Field(ge=0)
    sequence: int = Field(gt=0, lt=2**63)
    sent_at: float
    interval: float = Field(gt=0, le=3600)
    redundant_state: str | None = Field(default=None, max_length=16)
    services: dict[str, ServiceHealth] = Field(default_factory=dict, max_length=MAX_SERVICES)

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, ServiceHealth]) -> dict[str, ServiceHealth]:
        if not all(_SERVICE.match(name) for name in value):
            raise ValueError("a service name is not a name")
        return value

    @field_validator("appliance_id")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("not an appliance name")
        return value

    @field_validator("document_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not _HASH.match(value):
            raise ValueError("not a sha256 hex digest")
        return value

    @field_validator("sent_at", "uptime_s")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value

    def body(self) -> bytes:
        return orjson.dumps(self.model_dump())


class Rejected(Exception):
    """A heartbeat that must change nothing; ``status`` is the HTTP answer (400 or 403)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(body: bytes, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> dict[str, str]:
    """The headers that carry body's signature and the signer's certificate."""
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        CERT_HEADER: base64.b64encode(cert_pem).decode(),
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }


def _header(headers: Mapping[str, str], name: str) -> bytes:
    value = headers.get(name)
    if not value:
        raise Rejected(400, f"no {name} header: a heartbeat carries its certificate and "
                            "signature")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(400, f"the {name} header is not base64") from None


def names(cert: x509.Certificate) -> set[str]:
    """The certificate's common name and DNS subject alternative names."""
    out = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        out |= set(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return out


def verify(body: bytes, headers: Mapping[str, str], ca: x509.Certificate,
           now: datetime.datetime | None = None, max_skew: float = MAX_SKEW_S) -> Heartbeat:
    """The heartbeat in body if it is genuine and timely; raises Rejected otherwise."""
    now = now or datetime.datetime.now(datetime.UTC)
    if len(body) > MAX_BODY:
        raise Rejected(400, f"the body is larger than {MAX_BODY} bytes")
    cert_pem = _header(headers, CERT_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise Rejected(400, f"the {CERT_HEADER} header is not a PEM certificate") from None
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Rejected(403, "the certificate's key is not an EC key (agents sign with ECDSA)")
    try:
        public.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected(403, "the signature does not match the body and certificate") from None
    try:
        beat = Heartbeat.model_validate_json(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())
        raise Rejected(400, f"not a heartbeat (bad or missing: {fields})") from None
    found = names(cert)
    if beat.appliance_id not in found:
        raise Rejected(403, f"the certificate names {', '.join(sorted(found)) or 'nothing'}, "
                            f"not {beat.appliance_id}")
    verifier = (PolicyBuilder().store(Store([ca])).time(now)
                .build_server_verifier(x509.DNSName(beat.appliance_id)))
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        raise Rejected(403, "the certificate was not issued by the appliance CA or is not "
                            f"valid now: {exc}") from None
    skew = beat.sent_at - now.timestamp()
    if abs(skew) > max_skew:
        raise Rejected(403, f"sent {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                            f"this server's clock (at most {max_skew:.0f} s): stale or "
                            "replayed, or a clock is wrong")
    return beat


@dataclass
class Sequence:
    """Heartbeat sequence numbers: higher than ``last`` (persisted by the caller) and
    than the wall clock in microseconds, so a restarted agent continues upward."""

    last: int = 0

    def next(self, now_us: int) -> int:
        self.last = max(self.last + 1, now_us)
        return self.last
