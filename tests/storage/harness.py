"""The storage role's services in this process, applied through the agent's Applier."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from appliances.agent.pipeline import Applier, Outcome
from appliances.agent.service import AgentContext
from appliances.agent.store import DocumentStore
from appliances.storage.images import BUSY, Images
from appliances.storage.role import StorageRole
from appliances.storage.services import ImageService, TransferService
from appliances.storage.transfer import TransferServer

KEY = "test-key-" + "x" * 32


class Clock:
    """A settable wall clock for expiry checks."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, tmp_path: Path, clock: Clock | None = None):
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.store = tmp_path / "store"
        self.clock = clock or Clock()
        self.images = Images(backoff=0.01)
        ctx = AgentContext("ssvm-t", self.state_dir, 0)
        self.server = TransferServer(self.images, clock=self.clock)
        self.transfer = TransferService(ctx, self.images, self.server)
        self.image_service = ImageService(ctx, self.images)
        self.services = [self.transfer, self.image_service]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.applier = Applier(StorageRole(), self.services, DocumentStore(self.state_dir))

    def doc(self, generation: int, images: list[dict], *, transfer: bool = True, **extra) -> dict:
        body = {
            "appliance_id": "ssvm-t",
            "generation": generation,
            "store": {"path": str(self.store)},
            "images": images,
            **extra,
        }
        if transfer:
            body["transfer"] = {"address": "127.0.0.1", "port": 0, "key": KEY}
        return body

    async def apply(self, raw: dict) -> Outcome:
        body = orjson.dumps(raw)
        return await self.applier.apply(self.applier.parse(raw), raw, body)

    async def settle(self) -> None:
        """Wait until no image is being fetched."""
        for item in list(self.images.items.values()):
            if item.task is not None:
                await asyncio.gather(item.task, return_exceptions=True)
        assert not [i for i in self.images.items.values() if i.state in BUSY and i.task]

    def item(self, image_id: str) -> dict:
        return self.images.items[image_id].status()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.transfer.status()["tls"] else "http"
        return f"{scheme}://{self.transfer.listening()}"

    def store_files(self) -> list[str]:
        """Every file under the store (temp folder included), relative."""
        found = []
        for root, _dirs, files in os.walk(self.store):
            for name in files:
                found.append(str(Path(root, name).relative_to(self.store)))
        return sorted(found)

    async def start(self) -> None:
        for service in self.services:
            await service.start()
        await self.applier.restore()

    async def close(self) -> None:
        await self.applier.stop()
        for service in reversed(self.services):
            await service.stop()
