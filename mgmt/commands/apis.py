"""listApis and listCapabilities: what this server offers, from the declarations."""

from __future__ import annotations

from mgmt.api.envelope import ListResult, ObjectResult
from mgmt.api.registry import REGISTRY, Command, Param, command


def describe(cmd: Command) -> dict:
    return {
        "name": cmd.name,
        "description": cmd.description,
        "isasync": cmd.is_async,
        "since": cmd.since,
        "related": ",".join(cmd.related) or None,
        "params": [
            {
                "name": p.name,
                "description": p.description,
                "type": p.type,
                "length": p.length,
                "required": p.required,
                "since": p.since,
                "related": p.related,
            }
            for p in cmd.params
        ],
        "response": [
            {"name": name, "type": kind, "description": text}
            for name, kind, text in cmd.response_fields
        ],
    }


@command(
    "listApis",
    description="Lists the API commands the caller may use, with their parameters",
    params=[Param("name", description="only this command")],
    list_key="api",
    since="3.0.0",
)
async def list_apis(call, args) -> ListResult:
    wanted = (args["name"] or "").lower()
    items = [
        describe(cmd)
        for key, cmd in sorted(REGISTRY.items())
        if (not wanted or key == wanted) and call.role in cmd.roles
    ]
    return ListResult("api", items)


@command(
    "listCapabilities",
    description="Lists the capabilities of the cloud",
    list_key="capability",
    since="3.0.0",
)
async def list_capabilities(call, args) -> ObjectResult:
    return ObjectResult(
        "capability",
        {
            "cloudstackversion": "4.19.0.0-skiff",
            "apilimitmax": call.server.settings.api_limit if call.server else None,
            "apilimitinterval": call.server.settings.api_interval if call.server else None,
            "userpublictemplateenabled": False,
            "allowusercreateprojects": True,
            "kvmsnapshotenabled": False,
            "customdiskofferingmaxsize": 1024,
            "regionsecondaryenabled": False,
            "supportELB": "false",
            "projectinviterequired": False,
        },
    )
