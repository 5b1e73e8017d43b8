"""createConsoleEndpoint: a one-time console URL for an instance (CloudStack 4.18+).

Any caller, for an instance it may see (another account's answers like a missing
one). Where Skiff differs from CloudStack: a refusal (a stopped instance, no
console proxy running yet) is an API error, not ``success: false``; the URL is
plain HTTP to the console proxy's public address in the lab.
"""

from __future__ import annotations

from mgmt.api.envelope import ObjectResult
from mgmt.api.registry import Param, command
from mgmt.commands.vms import visible_vm
from mgmt.orchestration import console


@command(
    "createConsoleEndpoint",
    description="Creates a console endpoint for an instance: a URL (and its websocket) "
    "with a one-time token that the zone's console proxy opens",
    params=[
        Param("virtualmachineid", "uuid", required=True, resource="virtualmachine"),
        Param("token", description="extra security token, handed back as websocket.extra"),
    ],
    response="consoleendpoint",
    since="4.18.0",
)
async def create_console_endpoint(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        vm = await visible_vm(session, call, args["virtualmachineid"])
    answer = await console.endpoint(call.server.orchestrator, vm.id, args["token"])
    return ObjectResult("consoleendpoint", answer)
