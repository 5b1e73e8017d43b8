"""System VMs: listSystemVms, start/stop/reboot/destroySystemVm. Root admin commands,
as in CloudStack. The life cycle is mgmt.orchestration.systemvms."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from mgmt.api.envelope import ListResult, ObjectResult
from mgmt.api.errors import ApiError
from mgmt.api.registry import PAGING, ROOT_ONLY, Param, command
from mgmt.commands.common import date, not_found, of_uuid, paged, rows_by_id
from mgmt.commands.routers import AGENT_VERSION
from mgmt.db.models import Zone
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.systemvms import SystemVm
from mgmt.db.types import utcnow
from mgmt.orchestration import systemvms as lifecycle

#: A running system VM whose agent answered within this long is "Up".
AGENT_FRESH = timedelta(seconds=60)
TYPE_OF_API = {api: role for role, api in lifecycle.API_TYPE.items()}


def _checks(svm: SystemVm) -> list[dict]:
    try:
        checks = json.loads(svm.health or "[]")
    except ValueError:
        return []
    return checks if isinstance(checks, list) else []


def _agent_state(svm: SystemVm, vm: VmInstance) -> str | None:
    if vm.state != "Running":
        return None
    agent = next((c for c in _checks(svm) if c.get("checkname") == "agent"), None)
    fresh = svm.last_seen is not None and utcnow() - svm.last_seen <= AGENT_FRESH
    return "Up" if fresh and agent is not None and agent.get("success") else "Disconnected"


async def systemvm_answers(session, rows: list[tuple[SystemVm, VmInstance]]) -> list[dict]:
    if not rows:
        return []
    vm_ids = [vm.id for _, vm in rows]
    nics: dict[int, dict[str, Nic]] = {i: {} for i in vm_ids}
    for nic in (await session.scalars(select(Nic).where(Nic.vm_id.in_(vm_ids), Nic.live()))).all():
        nics[nic.vm_id][nic.traffic_type] = nic
    zones = await rows_by_id(session, Zone, (vm.zone_id for _, vm in rows))
    hosts = await rows_by_id(session, Host, (vm.host_id for _, vm in rows))
    out = []
    for svm, vm in rows:
        zone, host = zones[vm.zone_id], hosts.get(vm.host_id)
        public, control = nics[vm.id].get("Public"), nics[vm.id].get("Control")
        answer = {
            "id": vm.uuid,
            "name": vm.name,
            "systemvmtype": lifecycle.API_TYPE[svm.role],
            "state": vm.state,
            "zoneid": zone.uuid,
            "zonename": zone.name,
            "dns1": zone.dns1,
            "dns2": zone.dns2,
            "hostid": host.uuid if host else None,
            "hostname": host.name if host else None,
            "hypervisor": host.hypervisor if host else None,
            "publicip": public.ip_address if public else None,
            "publicmacaddress": public.mac if public else None,
            "publicnetmask": public.netmask if public else None,
            "gateway": public.gateway if public else None,
            "linklocalip": svm.control_ip,
            "linklocalmacaddress": control.mac if control else None,
            "linklocalnetmask": "255.255.255.0",
            # No management NIC: the server reaches the agent over the control network.
            "privateip": svm.control_ip,
            "privatemacaddress": control.mac if control else None,
            "privatenetmask": "255.255.255.0",
            "activeviewersessions": svm.active_sessions if svm.role == "console" else None,
            "created": date(vm.created),
            "agentstate": _agent_state(svm, vm),
            "version": svm.version or AGENT_VERSION,
            "isdynamicallyscalable": False,
            "healthcheckresults": _checks(svm),
        }
        out.append({k: v for k, v in answer.items() if v is not None})
    return out


async def _systemvm(session, uuid: str) -> tuple[SystemVm, VmInstance]:
    row = (
        await session.execute(
            select(SystemVm, VmInstance)
            .join(VmInstance, VmInstance.id == SystemVm.vm_id)
            .where(VmInstance.uuid == uuid, SystemVm.live(), VmInstance.live())
        )
    ).first()
    if row is None:
        raise not_found("system vm", uuid)
    return row[0], row[1]


async def _answer(call, svm_id: int) -> ObjectResult:
    async with call.server.db.sessions() as session:
        svm = await session.get_one(SystemVm, svm_id)
        vm = await session.get_one(VmInstance, svm.vm_id)
        [answer] = await systemvm_answers(session, [(svm, vm)])
        return ObjectResult("systemvm", answer)


@command(
    "listSystemVms",
    description="Lists the zones' system VMs: secondary storage VMs and console proxies",
    params=[
        *PAGING,
        Param("id", "uuid"),
        Param("name"),
        Param("state"),
        Param(
            "systemvmtype",
            choices=tuple(TYPE_OF_API),
            description="consoleproxy or secondarystoragevm",
        ),
        Param("zoneid", "uuid"),
        Param("hostid", "uuid"),
        Param("podid", "uuid", description="accepted for compatibility"),
        Param("storageid", "uuid", description="accepted for compatibility"),
    ],
    list_key="systemvm",
    roles=ROOT_ONLY,
    since="2.2.0",
)
async def list_system_vms(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = (
            select(SystemVm, VmInstance)
            .join(VmInstance, VmInstance.id == SystemVm.vm_id)
            .where(SystemVm.live(), VmInstance.live())
        )
        if args["id"]:
            query = query.where(VmInstance.uuid == args["id"])
        if args["name"]:
            query = query.where(VmInstance.name == args["name"])
        if args["state"]:
            query = query.where(VmInstance.state == args["state"].capitalize())
        if args["systemvmtype"]:
            query = query.where(SystemVm.role == TYPE_OF_API[args["systemvmtype"]])
        if args["zoneid"]:
            query = query.where(of_uuid(VmInstance.zone_id, Zone, args["zoneid"]))
        if args["hostid"]:
            query = query.where(of_uuid(VmInstance.host_id, Host, args["hostid"]))
        if args["keyword"]:
            query = query.where(VmInstance.name.contains(args["keyword"], autoescape=True))
        rows, total = await paged(session, query.order_by(SystemVm.id), args, rows=True)
        return ListResult(
            "systemvm", await systemvm_answers(session, [(s, v) for s, v in rows]), total
        )


async def _check(call, args) -> dict:
    async with call.server.db.sessions() as session:
        _, vm = await _systemvm(session, args["id"])
        return {"jobinstanceid": vm.uuid}


def _job(name: str, description: str, extra=()):
    return command(
        name,
        description=description,
        params=[Param("id", "uuid", required=True), *extra],
        is_async=True,
        response="systemvm",
        instance_type="SystemVm",
        roles=ROOT_ONLY,
        prepare=_check,
        since="2.2.0",
    )


def _event(svm: SystemVm, verb: str) -> str:
    return f"{lifecycle.EVENT_PREFIX[svm.role]}.{verb}"


async def _job_rows(call, args, allowed: tuple[str, ...], verb: str):
    async with call.server.db.sessions() as session:
        svm, vm = await _systemvm(session, args["id"])
    if allowed and vm.state not in allowed:
        raise ApiError(
            431, f"cannot {verb} {vm.name}: it is {vm.state} (it must be {' or '.join(allowed)})"
        )
    return svm, vm


@_job("startSystemVm", "Starts a stopped system VM and pushes its whole document")
async def start_system_vm(call, args) -> ObjectResult:
    svm, vm = await _job_rows(call, args, ("Stopped", "Error"), "start")
    orch = call.server.orchestrator
    async with lifecycle.hold(orch, svm.id):
        await lifecycle.start(orch, svm.id)
    await call.server.events.record(call, _event(svm, "START"), f"started {vm.name}", vm)
    return await _answer(call, svm.id)


@_job(
    "stopSystemVm",
    "Stops a system VM (it stays stopped until startSystemVm)",
    extra=(Param("forced", "boolean", description="accepted for compatibility"),),
)
async def stop_system_vm(call, args) -> ObjectResult:
    svm, vm = await _job_rows(call, args, ("Running", "Error", "Starting"), "stop")
    orch = call.server.orchestrator
    async with lifecycle.hold(orch, svm.id):
        await lifecycle.stop(orch, svm.id)
    await call.server.events.record(call, _event(svm, "STOP"), f"stopped {vm.name}", vm)
    return await _answer(call, svm.id)


@_job("rebootSystemVm", "Restarts a system VM and pushes its whole document")
async def reboot_system_vm(call, args) -> ObjectResult:
    svm, vm = await _job_rows(call, args, ("Running",), "reboot")
    orch = call.server.orchestrator
    async with lifecycle.hold(orch, svm.id):
        await lifecycle.stop(orch, svm.id)
        await lifecycle.start(orch, svm.id)
    await call.server.events.record(call, _event(svm, "REBOOT"), f"rebooted {vm.name}", vm)
    return await _answer(call, svm.id)


@_job("destroySystemVm", "Destroys a system VM; the zone gets a new one shortly")
async def destroy_system_vm(call, args) -> ObjectResult:
    svm, vm = await _job_rows(call, args, (), "destroy")
    orch = call.server.orchestrator
    async with call.server.db.sessions() as session:
        [answer] = await systemvm_answers(session, [(svm, vm)])
    async with lifecycle.hold(orch, svm.id):
        await lifecycle.destroy(orch, svm.id)
    await call.server.events.record(call, _event(svm, "DESTROY"), f"destroyed {vm.name}", vm)
    lifecycle.kick(orch)
    answer["state"] = "Destroyed"
    return ObjectResult("systemvm", answer)
