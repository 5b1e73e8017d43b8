"""Console access: a one-time token for an instance's VNC display, and key rotation.

``endpoint`` answers createConsoleEndpoint: a token sealed (AES-256-GCM,
appliances.common.console_token) under the zone console proxy's current key from
the keystore, naming the instance, its host's control address and VNC port and
the display's password. The browser carries it to the console proxy, which opens
it, refuses it a second time or after ``consoleproxy.token.ttl`` seconds, and
bridges one websocket to that display; host, port and password come from the
token only, so a token cannot be turned to another instance.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from appliances.common import console_token
from mgmt.api.errors import ApiError
from mgmt.db.models import Zone
from mgmt.db.models.compute import VmInstance
from mgmt.db.models.infra import Host, PublicIp
from mgmt.db.models.systemvms import VmConsole
from mgmt.db.sealing import VNC_PASSWORD
from mgmt.db.settings import get_setting
from mgmt.orchestration import systemvm_keys, systemvms
from mgmt.orchestration.systemvm_documents import CONSOLE_PORT, WEBSOCKET_PATH, console_url


async def endpoint(orch, vm_id: int, extra: str | None = None) -> dict[str, Any]:
    """createConsoleEndpoint's answer for the instance (the caller may see it)."""
    async with orch.db.sessions() as session:
        vm = await session.get_one(VmInstance, vm_id)
        label = vm.display_name or vm.host_name or vm.name
        if vm.state != "Running":
            raise ApiError(
                431, f"instance {label} is {vm.state}: only a Running instance has a console"
            )
        display = await session.scalar(
            select(VmConsole).where(VmConsole.vm_id == vm.id, VmConsole.live())
        )
        if vm.host_id is None or display is None or display.host_id != vm.host_id:
            raise ApiError(
                530,
                f"instance {label} has no console display (it started while "
                "vm.vnc.enabled was false; stop and start it)",
            )
        host = await session.get_one(Host, vm.host_id)
        zone = await session.get_one(Zone, vm.zone_id)
        found = await systemvms.live_row(session, vm.zone_id, "console")
        if found is None or found[1].state != "Running" or found[0].public_ip_id is None:
            raise ApiError(
                530, f"the console proxy of zone {zone.name} is not running yet; try again shortly"
            )
        public = (await session.get_one(PublicIp, found[0].public_ip_id)).address
        ttl = int(await get_setting(session, "consoleproxy.token.ttl"))
        port, password, uuid = display.port, display.password, vm.uuid
    keys = await systemvm_keys.console_keys(orch.db, zone.uuid)
    token, _grant = console_token.issue(
        console_token.decode_key(keys[0]),
        instance_id=uuid,
        host=orch.driver(host).control_address,
        port=port,
        password=orch.sealer.unseal(password, VNC_PASSWORD),
        ttl_s=ttl,
    )
    return {
        "success": True,
        "url": f"{console_url(public)}/?token={token}",
        "websocket": {
            "token": token,
            "host": public,
            "port": str(CONSOLE_PORT),
            "path": WEBSOCKET_PATH,
            "extra": extra or "",
        },
    }


async def rotate(orch, zone_id: int) -> list[str]:
    """A new token key for the zone's console proxy; the previous one stays in its
    document, so tokens issued just before still open. Pushes the document."""
    async with orch.db.sessions() as session:
        zone = await session.get_one(Zone, zone_id)
    keys = await systemvm_keys.rotate_console_keys(orch.db, zone.uuid)
    await systemvms.push_zone(orch, zone_id, "console")
    return keys
