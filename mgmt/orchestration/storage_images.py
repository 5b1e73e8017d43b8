"""The images a zone's secondary storage VM must hold: its document's ``images`` list.

One function, so the template and ISO commands can fill it from their tables without
touching the rest of the storage document (systemvm_documents.storage_document).
Each item is an ``appliances.storage.document.Image`` as JSON data: ``id``,
``format``, ``url`` or none (a browser upload), ``checksum``, ``state``,
``attempt``, ``name``. The reconcile loop pushes the document again when the list
changes.
"""

from __future__ import annotations

from typing import Any

from mgmt.db.models import Zone


async def storage_images(session, zone: Zone) -> list[dict[str, Any]]:
    """Every template and ISO the zone's image store must have (none yet)."""
    return []
