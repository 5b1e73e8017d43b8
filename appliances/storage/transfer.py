"""The data plane: browser uploads and extract downloads (aiohttp).

``POST /upload/<id>``: CloudStack's browser upload. The signature, metadata and
expiry headers are checked before a byte of the body is read, so a forged or
expired request changes nothing on disk (403). The file part of the
multipart/form-data body (the UI sends ``files[]``) is streamed into the store's
temp folder through the same Sink as downloads (hashed while written), then
verified and installed like a download. ``OPTIONS`` answers the browser's CORS
preflight.

``GET /extract/<token>`` (and HEAD): a stored image while the token is valid, with
Range support (aiohttp's FileResponse: sendfile, 206, If-Range).

Nothing else is served on this listener: the agent's API stays on its own mTLS port.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from appliances.storage.checksum import parse_checksum
from appliances.storage.document import Transfer
from appliances.storage.formats import FORMATS
from appliances.storage.images import DOWNLOADED, Conflict, Images
from appliances.storage.signing import (
    SignatureError,
    UploadMetadata,
    check_extract_token,
    check_upload,
)
from appliances.storage.sink import SinkError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Multipart framing allowed on top of the file's own size.
MULTIPART_SLACK = 64 * 1024
FIELD_LIMIT = 64 * 1024
FILE_FIELDS = ("files[]", "file", "files")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ALLOW_HEADERS = "x-signature, x-metadata, x-expires, x-host, content-type"


@dataclass
class Counters:
    uploads_accepted: int = 0
    uploads_refused: int = 0
    extracts_served: int = 0
    extracts_refused: int = 0


class TransferServer:
    def __init__(self, images: Images, *, clock: Callable[[], float] = time.time):
        self.images = images
        self.clock = clock
        self.config: Transfer | None = None
        self.counters = Counters()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("OPTIONS", "/upload/{id}", self.preflight)
        app.router.add_post("/upload/{id}", self.upload, expect_handler=self.expect)
        app.router.add_get("/extract/{token}", self.extract)
        return app

    # -- upload ----------------------------------------------------------------------------

    async def preflight(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        if not cors:
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                "Access-Control-Max-Age": "3600",
            },
        )

    async def upload(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        status, text = await self._upload(request)
        if status == 200:
            self.counters.uploads_accepted += 1
        else:
            self._refused(request, status, text)
        return web.Response(status=status, text=text + "\n", headers=cors)

    async def expect(self, request: web.Request) -> web.Response | None:
        """``Expect: 100-continue`` (curl sends it for large bodies): the headers are
        checked before the client is told to send the body, so a refused upload costs
        no transfer."""
        try:
            self._admit(request)
        except _Refused as exc:
            self._refused(request, exc.status, exc.text)
            return web.Response(
                status=exc.status,
                text=exc.text + "\n",
                headers={**self._cors(request), "Connection": "close"},
            )
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, text="unknown Expect\n")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    def _refused(self, request: web.Request, status: int, text: str) -> None:
        self.counters.uploads_refused += 1
        log.warning("upload to %s refused (%d): %s", request.path, status, text)

    def _admit(self, request: web.Request) -> _Admitted:
        """Everything the headers alone decide: signature, expiry, size, form."""
        cfg = self.config
        image_id = request.match_info["id"]
        if cfg is None or not _SAFE_ID.match(image_id):
            raise _Refused(404, "no such upload")
        h = request.headers
        try:
            meta = check_upload(
                cfg.key,
                self._post_url(request, cfg, image_id),
                h.get("X-Signature", ""),
                h.get("X-Metadata", ""),
                h.get("X-Expires", ""),
                now=self.clock(),
            )
        except SignatureError as exc:
            raise _Refused(403, str(exc)) from None
        if meta.id != image_id:
            raise _Refused(403, "the metadata names another image")
        if meta.format not in FORMATS:
            raise _Refused(400, f"unknown format {meta.format!r}")
        try:
            declared = str(parse_checksum(meta.checksum)) if meta.checksum else None
        except ValueError as exc:
            raise _Refused(400, f"checksum in metadata: {exc}") from None
        limit = min(meta.max_bytes, self.images.limits.max_upload_bytes)
        length = request.content_length
        if length is None:
            raise _Refused(411, "Content-Length is required")
        if length > limit + MULTIPART_SLACK:
            raise _Refused(413, f"the upload is {length} bytes, over the limit of {limit}")
        if not request.content_type.startswith("multipart/form-data"):
            raise _Refused(400, "the body must be multipart/form-data")
        return _Admitted(image_id, meta, declared, limit, length)

    async def _upload(self, request: web.Request) -> tuple[int, str]:
        try:
            admitted = self._admit(request)
        except _Refused as exc:
            return exc.status, exc.text
        image_id, meta, declared = admitted.image_id, admitted.meta, admitted.declared
        limit, length = admitted.limit, admitted.length
        try:
            item = self.images.begin_upload(image_id, meta.format, declared, meta.name)
        except Conflict as exc:
            return 409, str(exc)
        item.progress.total = length
        try:
            sink = self.images.new_sink(item)
        except OSError as exc:
            self.images.fail(item, f"cannot create the temp file: {exc}")
            return 500, item.error or "cannot create the temp file"
        try:
            part = await _file_part(request)
            if part is None:
                raise _Refused(422, "received entity is not a file")
            while chunk := await part.read_chunk(CHUNK):
                if sink.size + len(chunk) > limit:
                    raise _Refused(413, f"the upload passed the limit of {limit} bytes")
                await sink.write(chunk)
                item.progress.bytes = sink.size
        except _Refused as exc:
            sink.abort()
            self.images.fail(item, exc.text)
            return exc.status, exc.text
        except SinkError as exc:
            sink.abort()
            self.images.fail(item, str(exc))
            return 500, str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken body, whatever the parser raised
            sink.abort()
            message = f"file receive failed or connection closed prematurely ({exc})"
            self.images.fail(item, message)
            return 400, message
        except BaseException:
            sink.abort()
            self.images.fail(item, "the upload was interrupted")
            raise
        item.progress.total = sink.size
        await self.images.complete(item, sink)
        if item.state == DOWNLOADED:
            return 200, "upload successful"
        return 400, item.error or "upload failed"

    @staticmethod
    def _post_url(request: web.Request, cfg: Transfer, image_id: str) -> str:
        """The URL the management server signed: its public_url, else this request's
        scheme and host (as the browser addressed it)."""
        if cfg.public_url:
            return f"{cfg.public_url}/upload/{image_id}"
        host = request.headers.get("X-Forwarded-Host") or request.host
        return f"{'https' if cfg.tls else 'http'}://{host}/upload/{image_id}"

    def _cors(self, request: web.Request) -> dict[str, str]:
        cfg = self.config
        if cfg is None:
            return {}
        if "*" in cfg.cors_origins:
            return {"Access-Control-Allow-Origin": "*"}
        origin = request.headers.get("Origin")
        if origin and origin in cfg.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    # -- extract ---------------------------------------------------------------------------

    async def extract(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if cfg is None:
            return web.Response(status=404, text="not found\n")
        try:
            image_id = check_extract_token(cfg.key, request.match_info["token"], now=self.clock())
        except SignatureError as exc:
            self.counters.extracts_refused += 1
            return web.Response(status=403, text=f"{exc}\n")
        found = self.images.ready(image_id)
        if found is None:
            self.counters.extracts_refused += 1
            return web.Response(status=404, text=f"image {image_id} is not ready\n")
        item, path = found
        self.counters.extracts_served += 1
        assert item.record is not None  # noqa: S101 - ready() checked
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{item.record.file}"',
                "Cache-Control": "no-store",
            },
        )


@dataclass(frozen=True)
class _Admitted:
    image_id: str
    meta: UploadMetadata
    declared: str | None
    limit: int
    length: int


class _Refused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


async def _file_part(request: web.Request) -> BodyPartReader | None:
    """The first file part of the form; small text fields before it are skipped."""
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            return None
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not what a browser sends
        if part.filename is not None or part.name in FILE_FIELDS:
            return part
        skipped = 0
        while chunk := await part.read_chunk(8192):
            skipped += len(chunk)
            if skipped > FIELD_LIMIT:
                raise _Refused(400, f"form field {part.name!r} is too long")
