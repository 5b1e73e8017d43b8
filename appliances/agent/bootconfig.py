"""The boot configuration: what a system VM learns when it starts (format in images/README.md).

One image serves every role; the role, the appliance's identity, its control
address, the management server's address and its certificates arrive here. The
same model is read by the appliance (appliances/agent/boot.py) and written by
the management server (mgmt/orchestration/bootconfig.py).

Sources, named as on the kernel command line (``skiff.boot=<source>``):

- ``drive:LABEL`` a small vfat or iso9660 image with that label (default
  ``drive:SKIFFBOOT``) holding boot.json, ca.pem, cert.pem and key.pem;
- ``dir:/path`` the same files in a directory (the lab runtime);
- ``json:<base64url>`` boot.json itself, zlib-compressed, with the PEM text
  inline under ``pki`` (only small enough with EC keys: the kernel command
  line holds 2048 bytes).

Errors never echo what was read: a key must not reach the console.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from appliances.agent.tls import pem_names
from appliances.roles import ROLES

BOOT_JSON = "boot.json"
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
DRIVE_LABEL = "SKIFFBOOT"
CMDLINE_KEY = "skiff.boot"
DEFAULT_SOURCE = f"drive:{DRIVE_LABEL}"
#: x86's kernel command line (COMMAND_LINE_SIZE), all of it, not just our word.
CMDLINE_MAX = 2048
FORMAT = 1
MAX_FILE_BYTES = 256 * 1024

_DEVICE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_APPLIANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) "
    r"[A-Za-z0-9+/=]+( [ -~]{0,200})?")


class BootConfigError(Exception):
    """No usable boot configuration; the message says what is wrong and where."""

    def __init__(self, source: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Control(_Strict):
    """The control NIC: the management server reaches the agent here, and only here."""

    device: str = Field(description="interface name inside the appliance, e.g. eth1")
    address: ipaddress.IPv4Interface = Field(description="address/prefix")
    gateway: ipaddress.IPv4Address | None = Field(
        None, description="route to the management server when it is not on this network")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):
            raise ValueError("not an interface name")
        return v

    @model_validator(mode="after")
    def _gateway_on_link(self) -> Control:
        if self.gateway is not None and self.gateway not in self.address.network:
            raise ValueError(f"gateway {self.gateway} is not on {self.address.network}")
        return self


class Management(_Strict):
    """Where the management server is (recorded for the agent; routed via the gateway)."""

    address: str
    port: int = Field(8080, ge=1, le=65535)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if not _HOST.fullmatch(v):
                raise ValueError("not an IP address or a host name") from None
        return v


class Pki(_Strict):
    """PEM text inline (the kernel-command-line form only)."""

    ca: str
    cert: str
    key: str = Field(repr=False)


class Heartbeat(_Strict):
    """Where the agent POSTs its signed heartbeats (``skiff agent --heartbeat-url``): a
    URL of the management server reachable from the control network."""

    url: str = Field(max_length=512)
    interval: float = Field(5.0, ge=0.1, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok or any(c.isspace() for c in v):
            raise ValueError("not an http(s) URL with a host")
        return v


class BootConfig(_Strict):
    format: Literal[1] = FORMAT
    role: str
    appliance_id: str
    control: Control
    management: Management
    agent_port: int = Field(8443, ge=1, le=65535)
    ssh_authorized_keys: list[str] = Field(default_factory=list, max_length=16)
    #: Optional (absent: the agent sends none and is polled). Images built before this
    #: field refuse a configuration that has it (unknown fields are refused).
    heartbeat: Heartbeat | None = None
    pki: Pki | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"not a role this image runs ({', '.join(sorted(ROLES))})")
        return v

    @field_validator("appliance_id")
    @classmethod
    def _appliance_id(cls, v: str) -> str:
        if not _APPLIANCE_ID.fullmatch(v):
            raise ValueError("letters, digits, '.' and '-' only, at most 63")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            if not _SSH_KEY.fullmatch(key):
                raise ValueError(f"entry {i} is not one OpenSSH public key line")
        return v


@dataclass(frozen=True)
class Boot:
    """A validated boot configuration and its certificates (PEM bytes)."""

    config: BootConfig
    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)
    source: str = ""


def parse_config(data: bytes, source: str) -> BootConfig:
    """boot.json bytes -> BootConfig; BootConfigError lists every bad field by name only."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BootConfigError(source, f"{BOOT_JSON} is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BootConfigError(source, f"{BOOT_JSON} is not a JSON object")
    try:
        return BootConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False))
        raise BootConfigError(source, f"{BOOT_JSON}: {problems}") from None


def check_pki(config: BootConfig, ca: bytes, cert: bytes, key: bytes, source: str) -> None:
    """The CA and certificate parse, the key is the certificate's, the CA issued it, and
    it names this appliance (clients connect with server_hostname=<appliance id>)."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca)
    except ValueError:
        raise BootConfigError(source, f"{CA_FILE} is not a PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise BootConfigError(source, f"{CERT_FILE} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise BootConfigError(source, f"{KEY_FILE} is not an unencrypted PEM private key") \
            from None
    if private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise BootConfigError(source, f"{KEY_FILE} is not the key of {CERT_FILE}")
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise BootConfigError(source, f"{CERT_FILE} was not issued by {CA_FILE}") from None
    names = pem_names(cert)
    if config.appliance_id not in names:
        raise BootConfigError(source, f"{CERT_FILE} names {', '.join(sorted(names)) or 'nothing'}"
                              f", not the appliance id {config.appliance_id}")


def read_dir(path: Path, source: str | None = None) -> Boot:
    """Read boot.json and the PEM files from a directory (a mounted drive or the lab's)."""
    source = source or f"dir:{path}"
    path = Path(path)
    if not path.is_dir():
        raise BootConfigError(source, f"{path} is not a directory")
    config = parse_config(_read(path / BOOT_JSON, source), source)
    if config.pki is not None:
        ca, cert, key = (config.pki.ca.encode(), config.pki.cert.encode(),
                         config.pki.key.encode())
    else:
        ca, cert, key = (_read(path / name, source) for name in (CA_FILE, CERT_FILE, KEY_FILE))
    check_pki(config, ca, cert, key, source)
    return Boot(config, ca, cert, key, source)


def _read(path: Path, source: str) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BootConfigError(source, f"{path.name} is larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise BootConfigError(source, f"{path.name} is missing") from None
    except OSError as exc:
        raise BootConfigError(source, f"cannot read {path.name}: {exc.strerror}") from None


def decode_inline(value: str) -> Boot:
    """The ``json:<base64url(zlib(boot.json))>`` form; pki must be inline."""
    source = "kernel command line"
    try:
        data = zlib.decompress(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, zlib.error, ValueError):
        raise BootConfigError(source, f"{CMDLINE_KEY}=json:... is not base64url of "
                              "zlib-compressed JSON") from None
    config = parse_config(data, source)
    if config.pki is None:
        raise BootConfigError(source, "the inline form needs the PEM text under pki")
    ca, cert, key = config.pki.ca.encode(), config.pki.cert.encode(), config.pki.key.encode()
    check_pki(config, ca, cert, key, source)
    return Boot(config, ca, cert, key, source)


def encode_inline(config: BootConfig) -> str:
    """The kernel command line word for config (with pki inline)."""
    data = config.model_dump_json(exclude_none=True).encode()
    encoded = base64.urlsafe_b64encode(zlib.compress(data, 9)).decode().rstrip("=")
    return f"{CMDLINE_KEY}=json:{encoded}"


def source_from_cmdline(cmdline: str) -> str | None:
    """The ``skiff.boot=`` value of a kernel command line, if any (the last one wins)."""
    found = None
    for word in cmdline.split():
        if word.startswith(f"{CMDLINE_KEY}="):
            found = word.split("=", 1)[1]
    return found
