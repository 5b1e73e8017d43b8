"""The secondary storage role: its document and the services that realise it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from appliances.agent.service import AgentContext, Service
from appliances.common.errors import DocumentError
from appliances.storage.document import StorageDocument
from appliances.storage.images import Images
from appliances.storage.services import ImageService, TransferService


class StorageParser:
    """Plain validation: a storage document is small next to a router's."""

    def parse(self, raw: Any) -> StorageDocument:
        try:
            return StorageDocument.model_validate(raw)
        except ValidationError as exc:
            raise DocumentError.from_validation_error(exc) from None

    def accept(self, raw: Any, doc: StorageDocument) -> None:
        pass


class StorageRole:
    name = "storage"
    model = StorageDocument

    def parser(self) -> StorageParser:
        return StorageParser()

    def services(self, ctx: AgentContext) -> list[Service]:
        # The listener first: a port or TLS pair that fails stops the apply before
        # any image is deleted.
        images = Images()
        return [TransferService(ctx, images), ImageService(ctx, images)]
