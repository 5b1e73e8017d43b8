"""Virtual routers: listRouters, start/stop/reboot/destroyRouter,
getRouterHealthCheckResults. Admin commands, as in CloudStack."""

from __future__ import annotations

import json

from sqlalchemy import select

from appliances.common.version import skiff_version
from mgmt.api.envelope import ListResult, ObjectResult
from mgmt.api.errors import ApiError
from mgmt.api.registry import ADMINS, PAGING, SCOPE, Param, command
from mgmt.commands.common import date, not_found, of_uuid, paged, rows_by_id
from mgmt.commands.scope import scoped
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.compute import Nic, Router, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.networks import Network
from mgmt.orchestration import routers as lifecycle

#: The agent version this server's documents are written for: its own package's.
AGENT_VERSION = skiff_version()


def _health(router: Router) -> list[dict]:
    try:
        checks = json.loads(router.health or "[]")
    except ValueError:
        checks = []
    return checks if isinstance(checks, list) else []


async def router_answers(session, rows: list[tuple[Router, VmInstance]]) -> list[dict]:
    if not rows:
        return []
    vm_ids = [vm.id for _, vm in rows]
    nics: dict[int, list[Nic]] = {i: [] for i in vm_ids}
    for nic in (await session.scalars(select(Nic).where(Nic.vm_id.in_(vm_ids), Nic.live())
                                      .order_by(Nic.device_id))).all():
        nics[nic.vm_id].append(nic)

    networks = await rows_by_id(session, Network, (r.network_id for r, _ in rows))
    zones = await rows_by_id(session, Zone, (vm.zone_id for _, vm in rows))
    hosts = await rows_by_id(session, Host, (vm.host_id for _, vm in rows))
    accounts = await rows_by_id(session, Account, (vm.account_id for _, vm in rows))
    domains = await rows_by_id(session, Domain, (vm.domain_id for _, vm in rows))
    out = []
    for router, vm in rows:
        by_type = {n.traffic_type: n for n in nics[vm.id]}
        network, host = networks.get(router.network_id), hosts.get(vm.host_id)
        checks = _health(router)
        answer = {
            "id": vm.uuid,
            "name": vm.name,
            "state": vm.state,
            "role": "VIRTUAL_ROUTER",
            "zoneid": zones[vm.zone_id].uuid,
            "zonename": zones[vm.zone_id].name,
            "dns1": zones[vm.zone_id].dns1,
            "hostid": host.uuid if host else None,
            "hostname": host.name if host else None,
            "hypervisor": host.hypervisor if host else None,
            "linklocalip": router.control_ip,
            "linklocalmacaddress": by_type["Control"].mac if "Control" in by_type else None,
            "linklocalnetmask": "255.255.255.0",
            "publicip": by_type["Public"].ip_address if "Public" in by_type else None,
            "publicmacaddress": by_type["Public"].mac if "Public" in by_type else None,
            "publicnetmask": by_type["Public"].netmask if "Public" in by_type else None,
            "gateway": by_type["Public"].gateway if "Public" in by_type else None,
            "guestipaddress": by_type["Guest"].ip_address if "Guest" in by_type else None,
            "guestmacaddress": by_type["Guest"].mac if "Guest" in by_type else None,
            "guestnetmask": by_type["Guest"].netmask if "Guest" in by_type else None,
            "guestnetworkid": network.uuid if network else None,
            "guestnetworkname": network.name if network else None,
            "networkdomain": network.network_domain if network else None,
            "account": accounts[vm.account_id].name,
            "domainid": domains[vm.domain_id].uuid,
            "domain": domains[vm.domain_id].name,
            "isredundantrouter": router.is_redundant,
            "redundantstate": router.redundant_state,
            "version": router.version or AGENT_VERSION,
            "softwareversion": router.version or AGENT_VERSION,
            "requiresupgrade": bool(router.version and router.version != AGENT_VERSION),
            "healthchecksfailed": any(not c.get("success", True) for c in checks),
            "healthcheckresults": checks,
            "created": date(vm.created),
            "nic": [{"id": n.uuid, "traffictype": n.traffic_type, "ipaddress": n.ip_address,
                     "macaddress": n.mac, "netmask": n.netmask, "gateway": n.gateway,
                     "networkid": network.uuid if network and n.network_id else None,
                     "isdefault": n.is_default} for n in nics[vm.id]],
        }
        out.append({k: v for k, v in answer.items() if v is not None})
    return out


async def _router(session, call, uuid: str) -> tuple[Router, VmInstance]:
    query = select(Router, VmInstance).join(VmInstance, VmInstance.id == Router.vm_id).where(
        VmInstance.uuid == uuid, Router.live(), VmInstance.live())
    query = await scoped(session, call.caller, {"id": uuid, "listall": True}, query, VmInstance)
    row = (await session.execute(query)).first()
    if row is None:
        raise not_found("router", uuid)
    return row[0], row[1]


async def _check_router(call, args) -> dict:
    async with call.server.db.sessions() as session:
        _, vm = await _router(session, call, args["id"])
        return {"jobinstanceid": vm.uuid}


async def _answer(call, router_id: int) -> ObjectResult:
    async with call.server.db.sessions() as session:
        router = await session.get_one(Router, router_id)
        vm = await session.get_one(VmInstance, router.vm_id)
        [answer] = await router_answers(session, [(router, vm)])
        return ObjectResult("router", answer)


@command(
    "listRouters",
    description="Lists virtual routers",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="router"),
        Param("name"),
        Param("state"),
        Param("zoneid", "uuid"),
        Param("hostid", "uuid"),
        Param("networkid", "uuid"),
        Param("version"),
        Param("healthchecksfailed", "boolean"),
        Param("fetchhealthcheckresults", "boolean"),
        Param("forvpc", "boolean"),
        Param("vpcid", "uuid"),
    ],
    list_key="router",
    roles=ADMINS,
    since="2.2.0",
)
async def list_routers(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Router, VmInstance).join(VmInstance, VmInstance.id == Router.vm_id).where(
            Router.live(), VmInstance.live())
        query = await scoped(session, call.caller, {**args, "listall": True}
                             if call.caller.is_root_admin else args, query, VmInstance)
        if args["forvpc"] or args["vpcid"]:
            return ListResult("router", [])
        if args["id"]:
            query = query.where(VmInstance.uuid == args["id"])
        if args["name"]:
            query = query.where(VmInstance.name == args["name"])
        if args["state"]:
            query = query.where(VmInstance.state == args["state"])
        if args["zoneid"]:
            query = query.where(of_uuid(VmInstance.zone_id, Zone, args["zoneid"]))
        if args["hostid"]:
            query = query.where(of_uuid(VmInstance.host_id, Host, args["hostid"]))
        if args["networkid"]:
            query = query.where(of_uuid(Router.network_id, Network, args["networkid"]))
        rows, total = await paged(session, query.order_by(Router.id), args, rows=True)
        answers = await router_answers(session, [(r, v) for r, v in rows])
        if args["healthchecksfailed"] is not None:
            answers = [a for a in answers
                       if a["healthchecksfailed"] == args["healthchecksfailed"]]
            total = len(answers)
        return ListResult("router", answers, total)


def _router_job(name: str, description: str, since: str = "2.2.0", extra=()):
    return command(
        name,
        description=description,
        params=[Param("id", "uuid", required=True, resource="router"), *extra],
        is_async=True,
        response="router",
        instance_type="DomainRouter",
        roles=ADMINS,
        prepare=_check_router,
        since=since,
    )


@_router_job("startRouter", "Starts a stopped router and pushes its whole document")
async def start_router(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        router, vm = await _router(session, call, args["id"])
    if vm.state == "Running":
        raise ApiError(431, f"router {vm.name} is running already")
    await lifecycle.start(call.server.orchestrator, router.id)
    await call.server.events.record(call, "ROUTER.START", f"started router {vm.name}", vm)
    return await _answer(call, router.id)


@_router_job("stopRouter", "Stops a router",
             extra=(Param("forced", "boolean", description="accepted for compatibility"),))
async def stop_router(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        router, vm = await _router(session, call, args["id"])
    await lifecycle.stop(call.server.orchestrator, router.id)
    await call.server.events.record(call, "ROUTER.STOP", f"stopped router {vm.name}", vm)
    return await _answer(call, router.id)


@_router_job("rebootRouter", "Restarts a router and pushes its whole document",
             extra=(Param("forced", "boolean", description="accepted for compatibility"),))
async def reboot_router(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        router, vm = await _router(session, call, args["id"])
    orch = call.server.orchestrator
    await lifecycle.stop(orch, router.id)
    await lifecycle.start(orch, router.id)
    await call.server.events.record(call, "ROUTER.REBOOT", f"rebooted router {vm.name}", vm)
    return await _answer(call, router.id)


@_router_job("destroyRouter", "Destroys a router (restartNetwork or the next instance "
             "brings a new one)")
async def destroy_router(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        router, vm = await _router(session, call, args["id"])
        [answer] = await router_answers(session, [(router, vm)])
    await lifecycle.destroy(call.server.orchestrator, router.id)
    await call.server.events.record(call, "ROUTER.DESTROY", f"destroyed router {vm.name}", vm)
    answer["state"] = "Destroyed"
    return ObjectResult("router", answer)


@command(
    "getRouterHealthCheckResults",
    description="Runs the router's health checks now (its agent's live status) and "
    "returns them",
    params=[Param("routerid", "uuid", required=True, resource="router"),
            Param("performfreshchecks", "boolean", description="always fresh here")],
    response="routerhealthchecks",
    roles=ADMINS,
    since="4.14.0",
)
async def get_router_health_check_results(call, args) -> ObjectResult:
    from mgmt.orchestration import health

    async with call.server.db.sessions() as session:
        router, vm = await _router(session, call, args["routerid"])
    checks = await health.check(call.server.orchestrator, router.id)
    return ObjectResult("routerhealthchecks", {
        "routerid": vm.uuid, "healthchecks": checks,
    })



