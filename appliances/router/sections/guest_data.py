"""What the metadata, user-data and password service tells each guest."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from appliances.common.errors import FieldError
from appliances.common.types import HostIPv4, Hostname, Mac, SafeId

if TYPE_CHECKING:
    from appliances.router.document import RouterDocument

#: Free text served as a metadata value (offering or zone name): one printable line.
MetaText = Annotated[str, StringConstraints(pattern=r"^[ -~]{0,255}$")]
#: One SSH public key line ("ssh-ed25519 AAAA... comment").
PublicKey = Annotated[str, StringConstraints(pattern=r"^[ -~]{1,16384}$")]
#: User data as CloudStack carries it: base64, at most 1 MiB decoded.
UserData = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/=\r\n]*$", max_length=1_400_000)]
MAX_USER_DATA_BYTES = 1 << 20
Password = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,128}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceData(_Model):
    """One guest instance. A request is answered only when its source address
    and MAC (looked up in the router's neighbour table) are this entry's."""

    instance_id: SafeId = Field(description="CloudStack's uuid of the instance.")
    vm_id: SafeId = Field(description="The instance's internal name, e.g. i-2-10-VM.")
    ip: HostIPv4
    mac: Mac
    local_hostname: Hostname
    public_ipv4: HostIPv4 | None = None
    service_offering: MetaText = ""
    availability_zone: MetaText = ""
    public_keys: list[PublicKey] = Field(default_factory=list, max_length=64)
    user_data: UserData = ""
    password: Password | None = Field(
        default=None,
        description="Handed out once by the password server; a new "
        "value (resetPasswordForVirtualMachine) is handed out once again.",
    )


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    from appliances.router import verify as base

    by_ip: dict[str, int] = {}
    by_mac: dict[str, int] = {}
    by_id: dict[str, int] = {}
    for n, entry in enumerate(doc.guest_data):
        loc = f"guest_data.{n}"
        yield from base.in_guest(doc, entry.ip, f"{loc}.ip")
        yield from _user_data_ok(entry.user_data, f"{loc}.user_data")
        # The password server remembers hand-outs by instance id.
        if entry.instance_id in by_id:
            yield FieldError(
                f"{loc}.instance_id",
                f"the same instance_id as guest_data.{by_id[entry.instance_id]}",
            )
        by_id.setdefault(entry.instance_id, n)
        if entry.ip in by_ip:
            yield FieldError(f"{loc}.ip", f"the same IP as guest_data.{by_ip[entry.ip]}")
        if entry.mac in by_mac:
            yield FieldError(f"{loc}.mac", f"the same MAC as guest_data.{by_mac[entry.mac]}")
        by_ip.setdefault(entry.ip, n)
        by_mac.setdefault(entry.mac, n)


def _user_data_ok(text: str, loc: str) -> Iterator[FieldError]:
    """User data must decode (the metadata server serves it decoded) and fit 1 MiB."""
    if not text:
        return
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        yield FieldError(loc, "not valid base64")
        return
    if len(raw) > MAX_USER_DATA_BYTES:
        yield FieldError(loc, f"decodes to {len(raw)} bytes; at most {MAX_USER_DATA_BYTES}")
