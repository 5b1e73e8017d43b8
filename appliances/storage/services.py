"""The storage role's two services: the data-plane listener and the image store.

The transfer listener comes first: a port that cannot be bound or a TLS pair that
does not load fails the apply before any image is deleted. The images service
never fails an apply for one image: downloads run in the background and each
image carries its own state and error (see images.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from appliances.agent.service import AgentContext, Change, Service
from appliances.common.errors import ApplyError
from appliances.storage.document import Image, Limits, StorageDocument, Transfer
from appliances.storage.images import DELETED, ERROR, Images, Item
from appliances.storage.store import ImageStore
from appliances.storage.transfer import TransferServer

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0


# -- images ------------------------------------------------------------------------------


@dataclass
class _Plan:
    store: str
    open_store: bool
    limits: Limits
    listed: frozenset[str]
    download: list[Image] = field(default_factory=list)
    await_upload: list[Image] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # named absent: status says Deleted
    forget: list[str] = field(default_factory=list)  # dropped from the document
    renamed: dict[str, str | None] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.open_store
            or self.download
            or self.await_upload
            or self.delete
            or self.forget
            or self.renamed
        )

    def summary(self) -> str:
        parts = [f"store {self.store}"] if self.open_store else []
        for label, what in (
            ("download", self.download),
            ("await upload", self.await_upload),
            ("delete", self.delete + self.forget),
        ):
            if what:
                parts.append(f"{label} {len(what)}")
        if self.renamed:
            parts.append(f"rename {len(self.renamed)}")
        return ", ".join(parts) or "limits"


class ImageService(Service):
    """Converges the image store to the document's images."""

    name = "images"

    def __init__(self, ctx: AgentContext, images: Images):
        super().__init__(ctx)
        self.images = images
        self._listed: frozenset[str] = frozenset()  # ids the applied document names

    async def prepare(self, doc: StorageDocument) -> Change:
        store = self.images.store
        opening = store is None or str(store.root) != doc.store.path
        if opening:  # what the new store holds decides what must be fetched
            try:
                records = ImageStore(Path(doc.store.path)).scan()
            except OSError as exc:
                raise ApplyError(self.name, f"cannot read the image store: {exc}") from None
            items = {i: Item.installed(r) for i, r in records.items()}
        else:
            items = self.images.items
        listed = frozenset(i.id for i in doc.images)
        plan = _Plan(doc.store.path, opening, doc.limits, listed)
        for image in doc.images:
            item = items.get(image.id)
            if image.state == "absent":
                if item is None or item.state != DELETED:
                    plan.delete.append(image.id)
                continue
            if item is not None and item.name != image.name and item.state != DELETED:
                plan.renamed[image.id] = image.name
            if _needs_transfer(item, image):
                (plan.download if image.url else plan.await_upload).append(image)
        if not opening:
            plan.forget = sorted(self._listed - listed)
        if not plan.changed and doc.limits == self.images.limits:
            return Change(self.name, False, "unchanged")
        return Change(self.name, True, plan.summary(), plan)

    async def commit(self, change: Change) -> None:
        plan: _Plan = change.data
        if plan.open_store:
            try:
                self.images.open_store(Path(plan.store))
            except OSError as exc:
                raise ApplyError(
                    self.name, f"cannot open the image store {plan.store}: {exc}"
                ) from None
            self.state.event(f"image store {plan.store}: {len(self.images.items)} images")
        self.images.set_limits(plan.limits)
        for image_id in plan.forget:
            self._delete(image_id, keep_entry=False)
        for image_id in plan.delete:
            self._delete(image_id, keep_entry=True)
        for image in plan.await_upload:
            self.images.await_upload(image)
        for image in plan.download:
            self.images.start_download(image)
        for image_id, name in plan.renamed.items():
            if image_id in self.images.items:
                self.images.items[image_id].name = name
        self._listed = plan.listed

    def _delete(self, image_id: str, *, keep_entry: bool) -> None:
        try:
            self.images.delete(image_id, keep_entry=keep_entry)
            self.state.event(f"deleted {image_id}")
        except OSError as exc:  # the image stays listed with the reason
            item = self.images.items.get(image_id)
            if item is not None:
                item.state, item.error = ERROR, f"delete failed: {exc}"
            self.state.event(f"deleting {image_id} failed: {exc}")

    async def withdraw(self) -> None:
        self.images.cancel_all()

    async def stop(self) -> None:
        await self.images.close()

    def status(self) -> dict:
        return {**super().status(), **self.images.status()}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/images", self._list), web.get("/v1/images/{id}", self._one)]

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response(self.images.status())

    async def _one(self, request: web.Request) -> web.Response:
        item = self.images.items.get(request.match_info["id"])
        if item is None:
            return web.json_response({"error": "no such image"}, status=404)
        return web.json_response(item.status())


def _needs_transfer(item: Item | None, image: Image) -> bool:
    """Must ``image`` be fetched (or an upload awaited) anew? A failure stays until
    the image is described differently or its attempt is raised."""
    if item is None or item.state == DELETED or item.format != image.format:
        return True
    if image.url is None:
        if item.source != "upload":
            return True
    elif not item.matches(image):
        return True
    return item.state == ERROR and item.attempt != image.attempt


# -- transfer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bind:
    address: str
    port: int
    tls: object  # the Tls model or None (compared by value)


class TransferService(Service):
    """Listens for uploads and extracts where the document says (or nowhere)."""

    name = "transfer"

    def __init__(self, ctx: AgentContext, images: Images, server: TransferServer | None = None):
        super().__init__(ctx)
        self.server = server or TransferServer(images)
        self.dir = ctx.state_dir / "transfer"
        self._applied: Transfer | None = None
        self._bound: _Bind | None = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._tls: tuple[object, ssl.SSLContext] | None = None  # (Tls, its context)

    async def prepare(self, doc: StorageDocument) -> Change:
        wanted = doc.transfer
        if wanted == self._applied and (wanted is None) == (self._bound is None):
            return Change(self.name, False, "unchanged")
        if wanted is None:
            return Change(self.name, True, "listener closed", None)
        return Change(
            self.name,
            True,
            f"listen on {wanted.address}:{wanted.port}{' (TLS)' if wanted.tls else ''}",
            wanted,
        )

    async def check(self, change: Change) -> None:
        wanted: Transfer | None = change.data
        if wanted is not None:
            self._context(wanted)  # a pair that does not load fails before anything changes

    async def commit(self, change: Change) -> None:
        wanted: Transfer | None = change.data
        bind = _Bind(wanted.address, wanted.port, wanted.tls) if wanted else None
        if bind != self._bound:
            await self._close()
            if wanted is not None and bind is not None:
                await self._listen(bind, self._context(wanted))
        self.server.config = wanted
        self._applied = wanted

    async def withdraw(self) -> None:
        await self._close()
        self.server.config, self._applied = None, None

    async def stop(self) -> None:
        await self._close()

    def status(self) -> dict:
        c = self.server.counters
        return {
            **super().status(),
            "listening": self.listening(),
            "tls": bool(self._bound and self._bound.tls),
            "uploads_accepted": c.uploads_accepted,
            "uploads_refused": c.uploads_refused,
            "extracts_served": c.extracts_served,
            "extracts_refused": c.extracts_refused,
        }

    def listening(self) -> str | None:
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    def _context(self, wanted: Transfer) -> ssl.SSLContext | None:
        if wanted.tls is None:
            return None
        if self._tls is None or self._tls[0] != wanted.tls:
            self._tls = (wanted.tls, self._tls_context(wanted))
        return self._tls[1]

    def _tls_context(self, wanted: Transfer) -> ssl.SSLContext:
        """Load the pair from a 0600 file (the ssl module reads only files)."""
        assert wanted.tls is not None  # noqa: S101 - caller checked
        self.dir.mkdir(parents=True, exist_ok=True)
        pem = self.dir / "tls.pem.new"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(wanted.tls.key_pem.strip() + "\n" + wanted.tls.cert_pem.strip() + "\n")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(pem)
        except (ssl.SSLError, OSError) as exc:
            raise ApplyError(self.name, f"the TLS certificate and key do not load: {exc}") from None
        finally:
            pem.unlink(missing_ok=True)
        return ctx

    async def _listen(self, bind: _Bind, ssl_context: ssl.SSLContext | None) -> None:
        runner = web.AppRunner(
            self.server.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind.address, bind.port))
            sock.listen(128)
            sock.setblocking(False)
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        except OSError as exc:
            sock.close()
            await runner.cleanup()
            raise ApplyError(
                self.name, f"cannot listen on {bind.address}:{bind.port}: {exc}"
            ) from None
        self._runner, self._sock, self._bound = runner, sock, bind
        self.state.event(f"listening on {self.listening()}")
        log.info("storage transfer listening on %s", self.listening())

    async def _close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        if self._sock is not None:
            self._sock.close()
        self._runner = self._sock = self._bound = None
