"""The secondary storage appliance's desired-state document (schema version 1).

The management server sends the whole document; the agent converges the image
store to it: images that must be present are downloaded (or, without a URL, wait
for a browser upload), images marked ``absent`` or dropped from the previous
document are deleted. Downloads run in the background: the PUT answers at once and
``GET /v1/status`` (``services.images.items``) or ``GET /v1/images/<id>`` report
each image's progress.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from appliances.common.types import HostIPv4, SafeId
from appliances.storage.checksum import normalise

SCHEMA_VERSION = 1
GiB = 1 << 30


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _store_path(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        raise ValueError("must be an absolute path below / without '..'")
    return str(path)


def _http_url(value: str) -> str:
    from yarl import URL  # aiohttp's URL type, parsed as the client will

    try:
        url = URL(value)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


StorePath = Annotated[str, Field(max_length=1024), AfterValidator(_store_path)]
HttpUrl = Annotated[str, Field(min_length=8, max_length=4096), AfterValidator(_http_url)]
ChecksumText = Annotated[str, Field(max_length=140), AfterValidator(normalise)]
#: An HMAC key: printable ASCII without spaces, at least 32 characters.
Key = Annotated[str, Field(min_length=32, max_length=512, pattern=r"^[!-~]+$")]
Format = Literal["QCOW2", "RAW", "VHD", "ISO"]  # formats.FORMATS (a test keeps them equal)


class Store(_Model):
    path: StorePath = Field(
        description="The image store directory (an NFS mount in "
        "production, a directory in the lab); the agent owns it."
    )


class Limits(_Model):
    max_download_bytes: int = Field(default=100 * GiB, ge=1)
    max_upload_bytes: int = Field(default=50 * GiB, ge=1)
    max_concurrent_downloads: int = Field(default=4, ge=1, le=64)
    download_retries: int = Field(
        default=5,
        ge=0,
        le=50,
        description=("Failed requests in a row, without progress, before a download is an Error."),
    )


class Tls(_Model):
    cert_pem: str = Field(min_length=1, max_length=65536)
    key_pem: str = Field(min_length=1, max_length=65536)


class Transfer(_Model):
    """The data-plane listener: browser uploads (POST /upload/<id>) and extract
    downloads (GET /extract/<token>). HTTPS with ``tls``, HTTP without (the lab)."""

    address: HostIPv4 | Literal["0.0.0.0"]
    port: int = Field(default=443, ge=0, le=65535, description="0: any free port (tests)")
    tls: Tls | None = None
    key: Key = Field(
        description="HMAC key of upload signatures and extract tokens "
        "(appliances/storage/signing.py)."
    )
    public_url: HttpUrl | None = Field(
        default=None,
        description=(
            "Base URL the management server hands out (postURL = <public_url>/upload/<id>); "
            "signatures are checked against it. Unset: scheme and Host of the request."
        ),
    )
    cors_origins: list[
        Annotated[str, Field(min_length=1, max_length=256, pattern=r"^(\*|https?://[!-~]+)$")]
    ] = Field(
        default_factory=lambda: ["*"],
        max_length=64,
        description="Origins allowed to upload from a browser; '*' allows any.",
    )

    @model_validator(mode="after")
    def _public_url_plain(self) -> Self:
        if self.public_url is not None and self.public_url.rstrip("/") != self.public_url:
            raise ValueError("public_url must not end with '/'")
        return self


class Image(_Model):
    """A template or ISO that must exist in (or be gone from) the store."""

    id: SafeId
    format: Format
    url: HttpUrl | None = Field(
        default=None,
        description=("Where to download it from; unset: it arrives by browser upload."),
    )
    checksum: ChecksumText | None = Field(
        default=None,
        description=("{SHA-512}hex, {MD5}hex ... or bare hex (its length names the algorithm)."),
    )
    state: Literal["present", "absent"] = "present"
    attempt: int = Field(
        default=0, ge=0, description=("Raise it to retry an image whose download ended in Error.")
    )
    name: str | None = Field(default=None, max_length=255, description="shown in status")


class StorageDocument(_Model):
    """Everything one secondary storage appliance must be."""

    schema_version: Literal[1] = SCHEMA_VERSION
    appliance_id: SafeId
    generation: int = Field(ge=0)
    store: Store
    limits: Limits = Field(default_factory=Limits)
    transfer: Transfer | None = None
    images: list[Image] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        dup = sorted({i.id for i in self.images if i.id in seen or seen.add(i.id)})
        if dup:
            raise ValueError(f"image ids must be unique: {', '.join(dup[:10])}")
        return self
