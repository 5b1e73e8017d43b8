"""Templates and ISOs through the zone's storage appliance: browser upload, extract, copy.

- getUploadParamsForTemplate / getUploadParamsForIso record the template (status
  ``NotUploaded``) and answer what the browser needs to POST the file to the
  zone's storage appliance: ``postURL``, ``metadata``, ``expires``, ``signature``
  (appliances/storage/signing.py, under the zone's key,
  mgmt.orchestration.storage_images.upload_key). After ``upload.operation.timeout``
  minutes without an upload the template is ``UploadAbandoned``.
- extractTemplate / extractIso (HTTP_DOWNLOAD): a URL of the appliance that serves
  the image until ``extract.url.expiration.interval`` seconds have passed. The
  owner (or an admin of the owner) may extract; others only an extractable
  template they can see.
- copyTemplate / copyIso: the destination zone's appliance downloads the image
  from the source zone's appliance through an extract URL (valid a day), declared
  with the checksum the source verified. Copying again onto a failed copy retries
  it. The job ends once the copy is registered; listTemplates shows its progress.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, select

from appliances.storage.checksum import normalise
from appliances.storage.signing import UploadMetadata
from mgmt.api.envelope import ObjectResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import Param, command
from mgmt.commands.catalog import (
    ISO,
    TEMPLATE,
    TEMPLATE_DISK,
    Kind,
    images_changed,
    names_for,
    new_template,
    shown_in_zone,
    template_fields,
    visible_template,
)
from mgmt.commands.common import date, not_found
from mgmt.commands.image_urls import check_checksum
from mgmt.db.models import Zone
from mgmt.db.models.catalog import Template, TemplateZone
from mgmt.db.settings import get_setting
from mgmt.db.tenancy import owned_by
from mgmt.db.types import utcnow
from mgmt.orchestration import image_status, storage_images

GiB = 1 << 30
#: How long a copy's source URL stays valid: the destination may resume or retry.
COPY_URL_TTL = 24 * 3600.0
EXTRACT_MODES = ("HTTP_DOWNLOAD", "FTP_UPLOAD")


def _unavailable(zone: Zone) -> ApiError:
    return ApiError(
        534,
        f"no secondary storage VM is running in zone {zone.name}: "
        "its image store cannot be reached now",
    )


async def _zone(session, uuid: str) -> Zone:
    zone = await session.scalar(select(Zone).where(Zone.uuid == uuid, Zone.live()))
    if zone is None:
        raise not_found("zone", uuid)
    return zone


async def _may_change(session, call, template: Template) -> bool:
    """Does the caller own the template or administer its owner?"""
    query = select(Template.id).where(Template.id == template.id)
    return (
        await session.scalar(owned_by(query, Template, call.caller, with_projects=True)) is not None
    )


async def _rows(session, template: Template) -> list[tuple[TemplateZone, Zone]]:
    rows = await session.execute(
        select(TemplateZone, Zone)
        .join(Zone, Zone.id == TemplateZone.zone_id)
        .where(TemplateZone.template_id == template.id, shown_in_zone())
        .order_by(TemplateZone.id)
    )
    return list(rows.all())


async def _ready_in(
    session, template: Template, kind: Kind, zone_uuid: str | None
) -> tuple[TemplateZone, Zone]:
    """The template's ready row in the zone (or, without one, in its first zone)."""
    rows = await _rows(session, template)
    if zone_uuid:
        zone = await _zone(session, zone_uuid)
        rows = [(tz, z) for tz, z in rows if z.id == zone.id]
        if not rows:
            raise param_error(f"{kind.what} {template.uuid} is not registered in zone {zone_uuid}")
    ready = [(tz, z) for tz, z in rows if tz.is_ready]
    if not ready:
        where = f" in zone {rows[0][1].name}" if zone_uuid and rows else ""
        raise param_error(
            f"{kind.what} {template.uuid} is not ready{where} yet "
            f"(status: {rows[0][0].status if rows else 'not registered'})"
        )
    return ready[0]


# ---------------------------------------------------------------- upload


async def _upload_params(call, args, kind: Kind) -> ObjectResult:
    if args["zoneid"] == "-1":
        raise param_error(
            "zoneid -1: a browser uploads to one zone; copy the template to "
            "the others once it is ready (copyTemplate)"
        )
    orch = call.server.orchestrator
    checksum = check_checksum(args["checksum"])
    async with call.server.db.sessions() as session:
        zone = await _zone(session, args["zoneid"])
        template = await new_template(session, call, args, kind, checksum, False)
        minutes = int(await get_setting(session, "upload.operation.timeout"))
        max_gb = int(await get_setting(session, "max.template.iso.size"))
    # Before the transaction: the appliance is asked over the network, and the key may
    # be created in a session of its own.
    base = await storage_images.public_base(orch, zone.id)
    if base is None:
        raise _unavailable(zone)
    key = await storage_images.upload_key(orch, zone.id)
    expires = datetime.fromtimestamp(storage_images.now() + minutes * 60, UTC)
    async with call.server.db.sessions() as session:
        session.add(template)
        await session.flush()
        tz = TemplateZone(
            template_id=template.id,
            zone_id=zone.id,
            source="upload",
            download_state=image_status.NOT_UPLOADED,
            download_percent=0,
            status=image_status.status_text(image_status.NOT_UPLOADED),
            upload_expires=expires,
        )
        session.add(tz)
        await session.flush()
        meta = UploadMetadata(
            id=tz.uuid,
            format=template.format,
            max_bytes=max_gb * GiB,
            checksum=normalise(checksum) if checksum else None,
            name=template.name[:255],
        )
        params = storage_images.signed_upload(key, base, meta, minutes * 60.0)
        await session.commit()
        await call.server.events.record(
            call,
            f"{kind.event}.UPLOAD.INITIATE",
            f"upload of {kind.what} {template.name} to zone {zone.name} initiated",
            template,
        )
    images_changed(call, [zone.id])
    return ObjectResult(
        "getuploadparams",
        {
            "id": template.uuid,
            "postURL": params.postURL,
            "metadata": params.metadata,
            "expires": params.expires,
            "signature": params.signature,
        },
    )


UPLOAD_COMMON = (
    Param("name", required=True),
    Param("displaytext", length=4096, description="description (default: the name)"),
    Param("zoneid", required=True, description="the zone whose storage appliance takes it"),
    Param("ostypeid", "uuid", required=True, description="see listOsTypes"),
    Param(
        "checksum",
        description="{SHA-256}hex and the like, or bare hex; verified after "
        "the upload, before the template is ready",
    ),
    Param("ispublic", "boolean"),
    Param("isfeatured", "boolean", description="listed as featured (admins only)"),
    Param("isextractable", "boolean"),
    Param("account", description="accepted for compatibility (the caller owns it)"),
    Param("domainid", "uuid", description="accepted for compatibility"),
    Param("projectid", "uuid", description="the project that owns it", resource="project"),
)


@command(
    "getUploadParamsForTemplate",
    description="Records a template and returns what a browser needs to upload its file "
    "to the zone's storage appliance (postURL, metadata, expires, signature)",
    params=[
        *UPLOAD_COMMON,
        *TEMPLATE_DISK,
        Param("bootable", "boolean"),
    ],
    response="getuploadparams",
    since="4.6.0",
)
async def get_upload_params_for_template(call, args) -> ObjectResult:
    return await _upload_params(call, args, TEMPLATE)


@command(
    "getUploadParamsForIso",
    description="Records an ISO and returns what a browser needs to upload its file to "
    "the zone's storage appliance (postURL, metadata, expires, signature)",
    params=[*UPLOAD_COMMON, Param("bootable", "boolean", description="default true")],
    response="getuploadparams",
    since="4.13.0",
)
async def get_upload_params_for_iso(call, args) -> ObjectResult:
    return await _upload_params(call, args, ISO)


# ---------------------------------------------------------------- extract


async def _extractable(call, args, kind: Kind) -> tuple[Template, TemplateZone, Zone]:
    if args["mode"] != "HTTP_DOWNLOAD":
        raise ApiError(432, f"extract mode {args['mode']} is not supported: use HTTP_DOWNLOAD")
    async with call.server.db.sessions() as session:
        template = await visible_template(session, call, args["id"], kind, to_change=False)
        if not template.is_extractable and not await _may_change(session, call, template):
            raise param_error(
                f"Unable to extract {kind.what} id={template.uuid} as it's not extractable"
            )
        tz, zone = await _ready_in(session, template, kind, args["zoneid"])
        return template, tz, zone


async def _check_extract(call, args, kind: Kind) -> dict:
    template, _, _ = await _extractable(call, args, kind)
    return {"jobinstanceid": template.uuid}


async def _extract(call, args, kind: Kind) -> ObjectResult:
    template, tz, zone = await _extractable(call, args, kind)
    orch = call.server.orchestrator
    base = await storage_images.public_base(orch, zone.id)
    if base is None:
        raise _unavailable(zone)
    async with call.server.db.sessions() as session:
        ttl = float(await get_setting(session, "extract.url.expiration.interval"))
        names = await names_for(session, [template])
    url, _expires = await storage_images.signed_extract(orch, zone.id, base, tz.uuid, ttl)
    account = names["account"].get(template.account_id)
    await call.server.events.record(
        call, f"{kind.event}.EXTRACT", f"extract URL for {kind.what} {template.name}", template
    )
    return ObjectResult(
        kind.what,
        {
            "id": template.uuid,
            "name": template.name,
            "extractId": tz.uuid,
            "accountid": account.uuid if account else None,
            "state": "DOWNLOAD_URL_CREATED",
            "status": "DOWNLOAD_URL_CREATED",
            "uploadpercentage": 100,
            "url": url,
            "zoneid": zone.uuid,
            "zonename": zone.name,
            "extractMode": "HTTP_DOWNLOAD",
            "created": date(utcnow()),
            "resultstring": None,
        },
    )


EXTRACT_PARAMS = (
    Param("mode", required=True, choices=EXTRACT_MODES, description="HTTP_DOWNLOAD"),
    Param(
        "zoneid", "uuid", description="the zone to extract from (default: one where it is ready)"
    ),
    Param("url", length=2048, description="FTP_UPLOAD's target (not supported)"),
)


@command(
    "extractTemplate",
    description="A time-limited URL of the zone's storage appliance to download a template",
    params=[Param("id", "uuid", required=True, resource="template"), *EXTRACT_PARAMS],
    is_async=True,
    response="template",
    instance_type="Template",
    prepare=lambda call, args: _check_extract(call, args, TEMPLATE),
    since="2.0.0",
)
async def extract_template(call, args) -> ObjectResult:
    return await _extract(call, args, TEMPLATE)


@command(
    "extractIso",
    description="A time-limited URL of the zone's storage appliance to download an ISO",
    params=[Param("id", "uuid", required=True, resource="template"), *EXTRACT_PARAMS],
    is_async=True,
    response="iso",
    instance_type="Iso",
    prepare=lambda call, args: _check_extract(call, args, ISO),
    since="2.0.0",
)
async def extract_iso(call, args) -> ObjectResult:
    return await _extract(call, args, ISO)


# ---------------------------------------------------------------- copy


async def _copy_plan(call, args, kind: Kind):
    """The template, its ready source row and zone, and the destination zones (each
    with the failed copy there to retry, or None)."""
    raw = args.get("destzoneids") or ([args["destzoneid"]] if args.get("destzoneid") else [])
    if not raw:
        raise param_error("missing parameter destzoneid (or destzoneids)")
    async with call.server.db.sessions() as session:
        template = await visible_template(session, call, args["id"], kind, to_change=True)
        src_tz, src_zone = await _ready_in(session, template, kind, args["sourcezoneid"])
        shown = {z.id: tz for tz, z in await _rows(session, template)}
        dests = []
        for uuid in dict.fromkeys(raw):
            zone = await _zone(session, uuid)
            if zone.id == src_zone.id:
                raise param_error(f"destination zone {zone.name} is the source zone")
            existing = shown.get(zone.id)
            if existing is not None and not (
                existing.source == "copy" and existing.download_state == image_status.DOWNLOAD_ERROR
            ):
                raise param_error(f"{kind.what} {template.uuid} is already in zone {zone.name}")
            if existing is None and await _being_deleted(session, template, zone):
                raise ApiError(
                    536,
                    f"{kind.what} {template.uuid} is still being deleted from "
                    f"zone {zone.name}; copy it again once that is done",
                )
            dests.append((zone, existing))
        return template, src_tz, src_zone, dests


async def _being_deleted(session, template: Template, zone: Zone) -> bool:
    return (
        await session.scalar(
            select(TemplateZone.id).where(
                and_(
                    TemplateZone.template_id == template.id,
                    TemplateZone.zone_id == zone.id,
                    TemplateZone.live(),
                    TemplateZone.deleting.is_(True),
                )
            )
        )
        is not None
    )


async def _check_copy(call, args, kind: Kind) -> dict:
    template, *_ = await _copy_plan(call, args, kind)
    return {"jobinstanceid": template.uuid}


async def _copy(call, args, kind: Kind) -> ObjectResult:
    template, src_tz, src_zone, dests = await _copy_plan(call, args, kind)
    orch = call.server.orchestrator
    base = await storage_images.public_base(orch, src_zone.id)
    if base is None:
        raise _unavailable(src_zone)
    url, _ = await storage_images.signed_extract(orch, src_zone.id, base, src_tz.uuid, COPY_URL_TTL)
    state = {
        "download_state": image_status.NOT_DOWNLOADED,
        "download_percent": 0,
        "status": image_status.PENDING,
        "error": None,
        "is_ready": False,
        "url": url,
        "checksum": src_tz.stored_checksum,
        "source": "copy",
    }
    first = None
    async with call.server.db.sessions() as session:
        for zone, existing in dests:
            if existing is not None:  # a failed copy: again, from a fresh URL
                tz = await session.get_one(TemplateZone, existing.id)
                for name, value in state.items():
                    setattr(tz, name, value)
                tz.attempt += 1
            else:
                tz = TemplateZone(template_id=template.id, zone_id=zone.id, **state)
                session.add(tz)
            first = first or (tz, zone)
        await session.commit()
        names = await names_for(session, [template])
        await call.server.events.record(
            call,
            f"{kind.event}.COPY",
            f"copying {kind.what} {template.name} from zone "
            f"{src_zone.name} to {', '.join(z.name for z, _ in dests)}",
            template,
        )
        tz, zone = first
        await session.refresh(tz)
        answer = template_fields(template, tz, zone, names)
    images_changed(call, [z.id for z, _ in dests])
    return ObjectResult(kind.what, answer)


COPY_PARAMS = (
    Param("id", "uuid", required=True, resource="template"),
    Param("destzoneid", "uuid", description="the zone to copy to"),
    Param(
        "destzoneids", "list", items="uuid", description="several zones to copy to", since="4.13"
    ),
    Param(
        "sourcezoneid", "uuid", description="the zone to copy from (default: one where it is ready)"
    ),
)


@command(
    "copyTemplate",
    description="Copies a ready template to other zones (their storage appliances fetch it "
    "from the source zone's)",
    params=list(COPY_PARAMS),
    is_async=True,
    response="template",
    instance_type="Template",
    prepare=lambda call, args: _check_copy(call, args, TEMPLATE),
    since="2.0.0",
)
async def copy_template(call, args) -> ObjectResult:
    return await _copy(call, args, TEMPLATE)


@command(
    "copyIso",
    description="Copies a ready ISO to other zones (their storage appliances fetch it from "
    "the source zone's)",
    params=list(COPY_PARAMS),
    is_async=True,
    response="iso",
    instance_type="Iso",
    prepare=lambda call, args: _check_copy(call, args, ISO),
    since="2.0.0",
)
async def copy_iso(call, args) -> ObjectResult:
    return await _copy(call, args, ISO)
