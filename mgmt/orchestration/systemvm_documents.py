"""The system VMs' documents, built from the database: one builder per agent role.

``DOCUMENTS[role](inputs)`` returns the role's whole document as JSON data
(``generation`` 0: the push numbers it), validated by the appliance's own model
first, so a builder's mistake fails here and not in the appliance.

- console (appliances.console.document): the zone's token keys from the keystore
  (current, then previous), the public address and port browsers connect to, the
  idle timeout (``consoleproxy.session.timeout``);
- storage (appliances.storage.document): the zone's image store directory on the
  VM's host, the upload/extract listener on the public address with the zone's
  transfer key, and the images of storage_images.storage_images.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from appliances.console.document import ConsoleDocument
from appliances.storage.document import StorageDocument
from mgmt.db.models import Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.systemvms import SystemVm
from mgmt.db.settings import get_setting
from mgmt.orchestration import storage_images, systemvm_keys
from mgmt.orchestration.hosts.driver import HostDriver

#: Where browsers reach the console proxy (noVNC page and websocket), plain HTTP in the
#: lab, and the storage VM's upload and extract listener.
CONSOLE_PORT = 8080
STORAGE_PORT = 80
WEBSOCKET_PATH = "/websockify"


@dataclass
class DocumentInputs:
    """What a builder may read: an open session and the system VM's rows."""

    orch: Any
    session: Any
    zone: Zone
    vm: VmInstance
    system_vm: SystemVm
    #: Its public address (None: it has none yet).
    public_ip: str | None
    #: The driver of the host it runs on (None: not placed).
    driver: HostDriver | None


def console_url(public_ip: str) -> str:
    return f"http://{public_ip}:{CONSOLE_PORT}"


def storage_url(public_ip: str) -> str:
    """The base of upload (``/upload/<id>``) and extract (``/extract/<token>``) URLs."""
    return f"http://{public_ip}" if STORAGE_PORT == 80 else f"http://{public_ip}:{STORAGE_PORT}"


async def console_document(inputs: DocumentInputs) -> dict[str, Any]:
    keys = await systemvm_keys.console_keys(inputs.orch.db, inputs.zone.uuid)
    idle = int(await get_setting(inputs.session, "consoleproxy.session.timeout"))
    doc = ConsoleDocument(
        proxy_id=inputs.vm.name,
        generation=0,
        token_keys=keys,
        listen={"address": inputs.public_ip or "0.0.0.0", "port": CONSOLE_PORT},  # noqa: S104
        idle_timeout_s=idle,
    )
    return doc.model_dump(mode="json")


async def storage_document(inputs: DocumentInputs) -> dict[str, Any]:
    if inputs.driver is None:
        raise ValueError(f"{inputs.vm.name} is not on a host: its image store has no place")
    key = await systemvm_keys.storage_key(inputs.orch.db, inputs.zone.uuid)
    transfer = None
    if inputs.public_ip:
        transfer = {
            "address": inputs.public_ip,
            "port": STORAGE_PORT,
            "key": key,
            "public_url": storage_url(inputs.public_ip),
        }
    doc = StorageDocument(
        appliance_id=inputs.vm.name,
        generation=0,
        store={"path": inputs.driver.image_store(inputs.zone.uuid)},
        transfer=transfer,
        images=await storage_images.storage_images(inputs.session, inputs.zone),
    )
    return doc.model_dump(mode="json")


DOCUMENTS: dict[str, Callable[[DocumentInputs], Awaitable[dict[str, Any]]]] = {
    "console": console_document,
    "storage": storage_document,
}
