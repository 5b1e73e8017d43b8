"""Templates and ISOs on each zone's secondary storage appliance: the server's side.

- :func:`storage_images` is the ``images`` list of a zone's storage document
  (appliances/storage/document.py): one entry per template_zones row of the zone,
  ``present`` or, while the row is being deleted, ``absent``. The storage document
  builder (mgmt.orchestration.systemvms) calls it; nothing else decides what a
  zone's store holds.
- :func:`upload_key` is a zone's HMAC key of upload signatures and extract tokens
  (keystore entry ``storage-transfer-key:<zone uuid>``, made on first use). The
  zone's storage document's ``transfer.key`` is ``upload_key(orch, zone).decode()``,
  so what any management server signs the zone's appliance checks.
- The **site** is how the server finds a zone's storage appliance: its agent
  (mutual TLS), the public base URL of its transfer listener, and a push of the
  zone's document. By default that is the zone's storage system VM
  (``systemvms.agent_for``, ``systemvms.public_address``, ``systemvms.push_zone``);
  a test sets ``orch.storage_site`` to an agent it started itself.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import time
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from appliances.lab.agentclient import AgentClient
from appliances.storage.document import Image
from appliances.storage.signing import UploadMetadata, UploadParams, extract_token, upload_params
from mgmt.db.models import Zone
from mgmt.db.models.catalog import Template, TemplateZone
from mgmt.db.models.compute import KeystoreEntry

log = logging.getLogger("skiff.templates")

#: Keystore name of a zone's key, followed by the zone's uuid.
KEY_PREFIX = "storage-transfer-key:"
ROLE = "storage"
#: Formats the appliance stores (appliances.storage.document.Format).
STORE_FORMATS = ("QCOW2", "RAW", "VHD", "ISO")


# -- the document's image list ------------------------------------------------------------


def image_entry(tz: TemplateZone, template: Template) -> tuple[dict | None, str | None]:
    """The row's entry in the storage document, or None and why the appliance cannot
    take it (checked with the document's own model, so one bad row never makes the
    whole document fail)."""
    fmt = template.format if template.format in STORE_FORMATS else None
    if tz.deleting:  # only the id matters to a deletion
        entry: dict[str, Any] = {"id": tz.uuid, "format": fmt or "RAW", "state": "absent"}
    elif fmt is None:
        return None, (
            f"format {template.format} is not supported by the secondary storage "
            f"appliance ({', '.join(STORE_FORMATS)})"
        )
    else:
        entry = {
            "id": tz.uuid,
            "format": fmt,
            "state": "present",
            "attempt": tz.attempt,
            "name": template.name[:255],
        }
        if tz.source != "upload":
            entry["url"] = tz.url or template.url
        checksum = tz.checksum or template.checksum
        if checksum:
            entry["checksum"] = checksum
    try:
        image = Image.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "image"
        return None, f"the secondary storage appliance cannot take it: {where}: {first['msg']}"
    return image.model_dump(mode="json", exclude_none=True), None


async def storage_images(session, zone: Zone | int) -> list[dict]:
    """The ``images`` of the zone's storage document: every template or ISO registered
    in the zone (present) or being deleted there (absent), in row order."""
    zone_id = zone if isinstance(zone, int) else zone.id
    rows = await session.execute(
        select(TemplateZone, Template)
        .join(Template, Template.id == TemplateZone.template_id)
        .where(TemplateZone.zone_id == zone_id, TemplateZone.live())
        .order_by(TemplateZone.id)
    )
    images = []
    for tz, template in rows.all():
        entry, problem = image_entry(tz, template)
        if entry is None:
            log.debug("image %s left out of zone %s's document: %s", tz.uuid, zone_id, problem)
            continue
        images.append(entry)
    return images


# -- the zone's key -------------------------------------------------------------------------


async def upload_key(orch, zone: Zone | int) -> bytes:
    """The zone's storage HMAC key (printable ASCII, 64 characters): keystore entry
    ``storage-transfer-key:<zone uuid>``, the row the system VMs' document builder
    (systemvm_keys.storage_key) reads too. The first server that needs it creates it;
    one that loses the race reads the winner's."""
    async with orch.db.sessions() as session:
        if isinstance(zone, int):
            zone = await session.get_one(Zone, zone)
        name = KEY_PREFIX + zone.uuid
    found = await _key_text(orch.db, name)
    if found is None:
        try:
            async with orch.db.sessions() as session:
                session.add(
                    KeystoreEntry(name=name, certificate="", private_key=secrets.token_urlsafe(48))
                )
                await session.commit()
        except IntegrityError:
            pass  # another server made it first: read theirs
        found = await _key_text(orch.db, name)
        assert found is not None  # noqa: S101 - just written or found
    return found.encode()


async def _key_text(db, name: str) -> str | None:
    async with db.sessions() as session:
        return await session.scalar(
            select(KeystoreEntry.private_key).where(
                KeystoreEntry.name == name, KeystoreEntry.live()
            )
        )


# -- finding a zone's appliance -------------------------------------------------------------


class StorageSite(Protocol):
    """Where a zone's storage appliance is, and how its document is pushed."""

    async def agent(self, orch, zone_id: int) -> AgentClient | None:
        """A mutual-TLS client of the zone's storage agent; None: none runs."""

    async def public_url(self, orch, zone_id: int) -> str | None:
        """Base URL of its transfer listener (``<base>/upload/<id>``), no trailing /."""

    async def push(self, orch, zone_id: int) -> None:
        """Send the zone's whole storage document (images from storage_images)."""


class SystemVmSite:
    """The zone's storage system VM, through mgmt.orchestration.systemvms."""

    @staticmethod
    def _systemvms():
        try:
            from mgmt.orchestration import systemvms  # type: ignore[attr-defined]
        except ImportError:
            return None
        return systemvms

    async def agent(self, orch, zone_id: int) -> AgentClient | None:
        module = self._systemvms()
        if module is None or not hasattr(module, "agent_for"):
            return None
        return await _resolved(module.agent_for(orch, zone_id, ROLE))

    async def public_url(self, orch, zone_id: int) -> str | None:
        module = self._systemvms()
        agent = await self.agent(orch, zone_id)
        if module is None or agent is None:
            return None
        address = None
        if hasattr(module, "public_address"):
            address = await _resolved(module.public_address(orch, zone_id, ROLE))
        return await transfer_base(agent, address)

    async def push(self, orch, zone_id: int) -> None:
        module = self._systemvms()
        if module is None or not hasattr(module, "push_zone"):
            raise LookupError("this server cannot push storage documents")
        await _resolved(module.push_zone(orch, zone_id, ROLE))


SYSTEM_VM_SITE = SystemVmSite()


def site_for(orch) -> StorageSite:
    return getattr(orch, "storage_site", None) or SYSTEM_VM_SITE


async def _resolved(value):
    return await value if inspect.isawaitable(value) else value


async def transfer_base(agent: AgentClient, address: str | None = None) -> str | None:
    """The base URL the appliance checks signatures against: its document's
    ``transfer.public_url``, else scheme and port of its listener at ``address``
    (the appliance's public address; the listener's own address without one)."""
    reply = await agent.request("GET", "/v1/config", timeout=10)
    body = reply.body if reply.ok and isinstance(reply.body, dict) else {}
    transfer = body.get("transfer")
    if not transfer:
        return None
    if transfer.get("public_url"):
        return str(transfer["public_url"]).rstrip("/")
    scheme = "https" if transfer.get("tls") else "http"
    host = address or transfer.get("address")
    if not host or host == "0.0.0.0":
        return None
    port = int(transfer.get("port") or 443)
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


async def locate(orch, zone_id: int) -> tuple[AgentClient | None, str]:
    """The zone's storage agent, or None and why (for the template's status)."""
    try:
        agent = await site_for(orch).agent(orch, zone_id)
    except Exception as exc:  # noqa: BLE001 - whatever the site met, say it
        log.warning("zone %s: storage appliance not found: %s", zone_id, exc)
        agent = None
    if agent is not None:
        return agent, ""
    async with orch.db.sessions() as session:
        name = await session.scalar(select(Zone.name).where(Zone.id == zone_id))
    return None, f"no secondary storage VM is running in zone {name or zone_id}"


async def public_base(orch, zone_id: int) -> str | None:
    try:
        return await site_for(orch).public_url(orch, zone_id)
    except Exception as exc:  # noqa: BLE001 - an unreachable appliance: no URL
        log.warning("zone %s: storage appliance's public URL unknown: %s", zone_id, exc)
        return None


# -- what the server signs ------------------------------------------------------------------


def now() -> float:
    """The wall clock signatures and expiries start from (tests move it back)."""
    return time.time()


def signed_upload(key: bytes, base: str, meta: UploadMetadata, ttl: float) -> UploadParams:
    """getUploadParamsFor*'s answer for an upload to ``<base>/upload/<meta.id>`` (the key
    from :func:`upload_key`, fetched before the caller's transaction: making it writes)."""
    return upload_params(key.decode(), f"{base}/upload/{meta.id}", meta, ttl=ttl, now=now())


async def signed_extract(
    orch, zone_id: int, base: str, image_id: str, ttl: float
) -> tuple[str, float]:
    """An extract URL for the zone's image, valid ``ttl`` seconds, and its expiry."""
    key = (await upload_key(orch, zone_id)).decode()
    expires = now() + ttl
    return f"{base}/extract/{extract_token(key, image_id, expires)}", expires
