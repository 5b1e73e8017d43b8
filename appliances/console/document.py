"""The console proxy's desired-state document (schema version 1).

Small on purpose: the proxy learns every target from the tokens, so the
document carries only how to open them (the keys) and how to serve.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from appliances.common.console_token import decode_key
from appliances.common.errors import DocumentError, FieldError
from appliances.common.types import IPv4, Port, SafeId

SCHEMA_VERSION = 1


def _key(value: str) -> str:
    decode_key(value)
    return value


TokenKeyText = Annotated[
    str,
    Field(description="base64 of a 32-byte AES-256-GCM key"),
    AfterValidator(_key),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    """The public side, where browsers load noVNC and open the websocket."""

    address: IPv4 = "0.0.0.0"  # noqa: S104 - a console proxy serves the public side
    port: Port = 8080


class Tls(_Model):
    """HTTPS and WSS on the public side (the browser sends the token over it)."""

    certificate: str = Field(
        max_length=65_536,
        pattern=r"-----BEGIN CERTIFICATE-----",
        description="PEM: the server certificate, then any intermediates",
    )
    key: str = Field(
        repr=False,
        max_length=65_536,
        pattern=r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        description="PEM: the certificate's private key (unencrypted)",
    )


class ConsoleDocument(_Model):
    """Everything one console proxy must be. Replaces the previous document whole."""

    schema_version: Literal[1] = SCHEMA_VERSION
    proxy_id: SafeId
    generation: int = Field(ge=0)
    token_keys: list[TokenKeyText] = Field(
        repr=False,
        min_length=1,
        max_length=2,
        description="the current key first, then the previous one while tokens sealed "
        "with it may still be in flight (rotation)",
    )
    listen: Listen = Field(default_factory=Listen)
    tls: Tls | None = None
    idle_timeout_s: int = Field(
        default=300,
        ge=1,
        le=86_400,
        description="close a session after this long with no bytes in either direction",
    )
    session_limit: int = Field(default=500, ge=1, le=10_000)
    connect_timeout_s: int = Field(
        default=10, ge=1, le=120, description="to reach the VNC server and finish its handshake"
    )

    def keys(self) -> tuple[bytes, ...]:
        return tuple(decode_key(k) for k in self.token_keys)


class ConsoleParser:
    """The agent's parser contract (no per-item reuse: the document is tiny)."""

    def parse(self, raw: Any) -> ConsoleDocument:
        try:
            return ConsoleDocument.model_validate(raw)
        except ValidationError as exc:
            error = DocumentError.from_validation_error(exc)
            raise DocumentError([_without_secret(e) for e in error.errors]) from None

    def accept(self, raw: Any, doc: ConsoleDocument) -> None:
        pass


def _without_secret(error: FieldError) -> FieldError:
    """Errors quote the offending input; a near-miss key must not end up in a log."""
    secret = error.loc.startswith("token_keys.") or error.loc == "tls.key"
    if secret and " (got " in error.msg:
        return FieldError(error.loc, error.msg.split(" (got ", 1)[0])
    return error
