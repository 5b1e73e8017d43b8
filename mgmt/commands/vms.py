"""Instances: deployVirtualMachine and its life cycle, listVirtualMachines, listNics.

States are CloudStack's: Starting, Running, Stopping, Stopped, Destroyed (still
recoverable, its address kept), Expunging, Error. Each life-cycle command is an
async job that ends when the host has done it and the network's router knows.
"""

from __future__ import annotations

import base64
import binascii
import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, SCOPE, Param, command
from mgmt.commands.common import date, new_id, not_found, of_uuid, paged, rows_by_id
from mgmt.commands.scope import scoped
from mgmt.db.models import Account, Domain, Zone
from mgmt.db.models.catalog import NetworkOffering, ServiceOffering, Template
from mgmt.db.models.compute import Nic, VmInstance
from mgmt.db.models.infra import Host
from mgmt.db.models.networks import Network
from mgmt.db.tenancy import owned_by
from mgmt.orchestration import instances
from mgmt.orchestration.placement import free_guest_ip, new_mac, retrying
from mgmt.orchestration.routers import ROUTER_CPU_MHZ

HOSTNAME_MAX = 63
USER_DATA_MAX = 1_048_576  # base64 text, as CloudStack's vm.userdata.max.length allows
VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Error")


def _hostname(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", value) or \
            value.isdigit():
        raise param_error(
            f"name {value[:80]!r}: a hostname is 1-63 letters, digits or '-', not starting or "
            "ending with '-' and not all digits")
    return value


def _user_data(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > USER_DATA_MAX:
        raise param_error(f"userdata is longer than {USER_DATA_MAX} characters")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise param_error("userdata must be base64 encoded") from None
    return value


def nic_fields(nic: Nic, network: Network | None) -> dict:
    return {
        "id": nic.uuid,
        "networkid": network.uuid if network else None,
        "networkname": network.name if network else None,
        "ipaddress": nic.ip_address,
        "netmask": nic.netmask,
        "gateway": nic.gateway,
        "macaddress": nic.mac,
        "isdefault": nic.is_default,
        "traffictype": nic.traffic_type,
        "type": "Isolated" if nic.traffic_type == "Guest" else nic.traffic_type,
        "broadcasturi": f"vxlan://{network.vlan}" if network and network.vlan else None,
        "isolationuri": f"vxlan://{network.vlan}" if network and network.vlan else None,
        "deviceid": str(nic.device_id),
        "virtualmachineid": None,
    }


async def vm_answers(session, vms: list[VmInstance], admin: bool) -> list[dict]:
    if not vms:
        return []
    ids = [v.id for v in vms]

    nics: dict[int, list[Nic]] = {i: [] for i in ids}
    for nic in (await session.scalars(select(Nic).where(Nic.vm_id.in_(ids), Nic.live())
                                      .order_by(Nic.device_id))).all():
        nics[nic.vm_id].append(nic)
    networks = await rows_by_id(session, Network,
                                (n.network_id for ns in nics.values() for n in ns))
    zones = await rows_by_id(session, Zone, (v.zone_id for v in vms))
    accounts = await rows_by_id(session, Account, (v.account_id for v in vms))
    domains = await rows_by_id(session, Domain, (v.domain_id for v in vms))
    offerings = await rows_by_id(session, ServiceOffering, (v.service_offering_id for v in vms))
    templates = await rows_by_id(session, Template, (v.template_id for v in vms))
    hosts = await rows_by_id(session, Host, (v.host_id for v in vms))
    out = []
    for vm in vms:
        zone, offering, template = zones.get(vm.zone_id), offerings.get(vm.service_offering_id), \
            templates.get(vm.template_id)
        answer = {
            "id": vm.uuid,
            "name": vm.host_name or vm.name,
            "displayname": vm.display_name or vm.host_name or vm.name,
            "instancename": vm.name if admin else None,
            "account": accounts[vm.account_id].name,
            "domainid": domains[vm.domain_id].uuid,
            "domain": domains[vm.domain_id].name,
            "state": vm.state,
            "zoneid": zone.uuid if zone else None,
            "zonename": zone.name if zone else None,
            "serviceofferingid": offering.uuid if offering else None,
            "serviceofferingname": offering.name if offering else None,
            "templateid": template.uuid if template else None,
            "templatename": template.name if template else None,
            "templatedisplaytext": template.display_text if template else None,
            "passwordenabled": bool(template and template.password_enabled),
            "cpunumber": vm.cpu_number,
            "cpuspeed": vm.cpu_speed,
            "memory": vm.memory,
            "haenable": vm.ha_enabled,
            "group": vm.group_name,
            "hypervisor": "Netns",
            "created": date(vm.created),
            "lastupdated": date(vm.started),
            "nic": [nic_fields(n, networks.get(n.network_id)) | {"virtualmachineid": vm.uuid}
                    for n in nics[vm.id]],
            "tags": [],
            "affinitygroup": [],
            "securitygroup": [],
            "details": {},
            "isdynamicallyscalable": False,
        }
        if admin and vm.host_id in hosts:
            answer["hostid"] = hosts[vm.host_id].uuid
            answer["hostname"] = hosts[vm.host_id].name
        out.append({k: v for k, v in answer.items() if v is not None})
    return out


async def visible_vm(session, call, uuid: str) -> VmInstance:
    vm = await session.scalar(owned_by(
        select(VmInstance).where(VmInstance.uuid == uuid, VmInstance.type == "User",
                                 VmInstance.live()), VmInstance, call.caller,
        with_projects=True))
    if vm is None:
        raise not_found("virtual machine", uuid)
    return vm


async def _answer(call, vm_id: int) -> ObjectResult:
    async with call.server.db.sessions() as session:
        vm = await session.get_one(VmInstance, vm_id)
        [answer] = await vm_answers(session, [vm], call.caller.is_root_admin)
        return ObjectResult("virtualmachine", answer)


async def _check_vm(call, args) -> dict:
    async with call.server.db.sessions() as session:
        vm = await visible_vm(session, call, args["id"])
        return {"jobinstanceid": vm.uuid}


# -- deploy ------------------------------------------------------------------------------


async def _check_deploy(call, args) -> dict:
    """Refuse bad input before the job exists: every problem named at once."""
    problems = []
    if args["name"]:
        try:
            _hostname(args["name"])
        except ApiError as exc:
            problems.append(exc.text)
    try:
        _user_data(args["userdata"])
    except ApiError as exc:
        problems.append(exc.text)
    if not args["networkids"]:
        problems.append("networkids: give the isolated network to deploy in")
    if problems:
        raise param_error("; ".join(problems))
    async with call.server.db.sessions() as session:
        await _deploy_inputs(session, call, args)
    return {}


async def _deploy_inputs(session, call, args):
    zone = await session.scalar(select(Zone).where(Zone.uuid == args["zoneid"], Zone.live()))
    if zone is None:
        raise not_found("zone", args["zoneid"])
    offering = await session.scalar(select(ServiceOffering).where(
        ServiceOffering.uuid == args["serviceofferingid"], ServiceOffering.live(),
        ServiceOffering.is_system.is_(False)))
    if offering is None:
        raise not_found("service offering", args["serviceofferingid"])
    template = await session.scalar(select(Template).where(
        Template.uuid == args["templateid"], Template.live()))
    if template is None or not (template.is_public or template.account_id ==
                                call.caller.account_id or call.caller.is_root_admin):
        raise not_found("template", args["templateid"])
    networks = []
    for uuid in args["networkids"]:
        network = await session.scalar(owned_by(select(Network).where(
            Network.uuid == uuid, Network.live()), Network, call.caller, with_projects=True))
        if network is None:
            raise not_found("network", uuid)
        if network.zone_id != zone.id:
            raise param_error(f"network {network.name} is not in zone {zone.name}")
        networks.append(network)
    if len(networks) != 1:
        raise param_error("networkids: deploy in exactly one isolated network for now")
    return zone, offering, template, networks


@command(
    "deployVirtualMachine",
    description="Creates and starts an instance in an isolated network (implementing the "
    "network, and starting its router, on first use)",
    params=[
        Param("zoneid", "uuid", required=True),
        Param("serviceofferingid", "uuid", required=True),
        Param("templateid", "uuid", required=True),
        Param("networkids", "list", items="uuid", description="the network (one, isolated)"),
        Param("name", description="hostname (default: VM-<id>)"),
        Param("displayname", description="display name (default: the name)"),
        Param("ipaddress", description="the address in the network (default: the first free)"),
        Param("userdata", length=USER_DATA_MAX, description="base64 user data"),
        Param("group"),
        Param("hostid", "uuid", description="admin: the host to start it on"),
        Param("startvm", "boolean", description="start it (default true)"),
        Param("hypervisor", description="accepted for compatibility"),
        Param("keypair", description="accepted for compatibility"),
        Param("diskofferingid", "uuid", description="accepted for compatibility"),
        Param("account"),
        Param("domainid", "uuid", resource="domain"),
        Param("projectid", "uuid", resource="project"),
    ],
    is_async=True,
    creates=True,
    response="virtualmachine",
    instance_type="VirtualMachine",
    prepare=_check_deploy,
    since="2.0.0",
)
async def deploy_virtual_machine(call, args) -> ObjectResult:
    orch = call.server.orchestrator
    user_data = _user_data(args["userdata"])
    async with call.server.db.sessions() as session:
        zone, offering, template, [network] = await _deploy_inputs(session, call, args)
    network_offering_ok = True
    async with call.server.db.sessions() as session:
        no = await session.get(NetworkOffering, network.network_offering_id)
        network_offering_ok = no is not None and no.guest_ip_type == "Isolated"
    if not network_offering_ok:
        raise param_error(f"network {network.name} is not an isolated network")

    async def insert() -> int:
        async with call.server.db.sessions() as session:
            net = await session.get_one(Network, network.id)
            try:
                ip = await free_guest_ip(session, net, args["ipaddress"])
            except ValueError as exc:
                raise param_error(str(exc)) from None
            except LookupError as exc:
                raise ApiError(533, str(exc)) from None
            vm = VmInstance(**new_id(args), name=f"i-new-{new_mac('00:00')}",
                            display_name=args["displayname"], host_name=args["name"],
                            type="User", state="Starting", account_id=network.account_id,
                            domain_id=network.domain_id, zone_id=zone.id,
                            service_offering_id=offering.id, template_id=template.id,
                            cpu_number=offering.cpu_number or 1,
                            cpu_speed=offering.cpu_speed or ROUTER_CPU_MHZ,
                            memory=offering.memory or 256, user_data=user_data,
                            group_name=args["group"])
            session.add(vm)
            await session.flush()
            vm.name = f"i-{network.account_id}-{vm.id}-VM"
            vm.host_name = vm.host_name or f"VM-{vm.uuid[:8]}"
            vm.display_name = vm.display_name or vm.host_name
            session.add(Nic(vm_id=vm.id, network_id=network.id, traffic_type="Guest",
                            ip_address=ip, netmask=network.netmask, gateway=network.gateway,
                            mac=new_mac(), device_id=0, is_default=True))
            await session.commit()
            return vm.id

    try:
        vm_id = await retrying(insert, "guest address")
    except IntegrityError as exc:  # pragma: no cover - retrying re-raises as RuntimeError
        raise ApiError(530, str(exc)) from exc
    async with call.server.db.sessions() as session:
        vm = await session.get_one(VmInstance, vm_id)
        await call.server.events.record(call, "VM.CREATE", f"created instance {vm.host_name}",
                                        vm)
    if args["startvm"] is not False:
        await instances.start(orch, vm_id, prefer_host=await _chosen_host(call, args))
        async with call.server.db.sessions() as session:
            vm = await session.get_one(VmInstance, vm_id)
            await call.server.events.record(call, "VM.START",
                                            f"started instance {vm.host_name}", vm)
    else:
        async with call.server.db.sessions() as session:
            vm = await session.get_one(VmInstance, vm_id)
            vm.state = "Stopped"
            await session.commit()
    return await _answer(call, vm_id)


# -- life cycle --------------------------------------------------------------------------


def _lifecycle(name: str, description: str, event: str, extra=(), since="2.0.0"):
    return command(
        name,
        description=description,
        params=[Param("id", "uuid", required=True, resource="virtualmachine"), *extra],
        is_async=True,
        response="virtualmachine",
        instance_type="VirtualMachine",
        prepare=_check_vm,
        since=since,
    )


async def _vm_for_job(call, args, allowed: tuple[str, ...], verb: str) -> VmInstance:
    async with call.server.db.sessions() as session:
        vm = await visible_vm(session, call, args["id"])
    if vm.state not in allowed:
        raise ApiError(431, f"cannot {verb} instance {vm.host_name}: it is {vm.state} "
                       f"(it must be {' or '.join(allowed)})")
    return vm


async def _record(call, vm_id: int, event: str, text: str) -> None:
    async with call.server.db.sessions() as session:
        vm = await session.get_one(VmInstance, vm_id)
        await call.server.events.record(call, event, f"{text} {vm.host_name}", vm)


async def _chosen_host(call, args) -> int | None:
    """The host a root admin named (hostid), else None: the allocator decides."""
    if not args["hostid"]:
        return None
    if not call.caller.is_root_admin:
        raise ApiError(432, "only a root admin may choose the host (hostid)")
    async with call.server.db.sessions() as session:
        host = await session.scalar(select(Host).where(Host.uuid == args["hostid"],
                                                       Host.live()))
        if host is None:
            raise not_found("host", args["hostid"])
        return host.id


@_lifecycle("startVirtualMachine", "Starts a stopped instance", "VM.START",
            extra=(Param("hostid", "uuid", description="admin: the host to start it on"),))
async def start_virtual_machine(call, args) -> ObjectResult:
    vm = await _vm_for_job(call, args, ("Stopped", "Error"), "start")
    prefer = await _chosen_host(call, args) or vm.last_host_id
    await instances.start(call.server.orchestrator, vm.id, prefer_host=prefer)
    await _record(call, vm.id, "VM.START", "started instance")
    return await _answer(call, vm.id)


@_lifecycle("stopVirtualMachine", "Stops a running instance", "VM.STOP",
            extra=(Param("forced", "boolean", description="accepted for compatibility"),))
async def stop_virtual_machine(call, args) -> ObjectResult:
    vm = await _vm_for_job(call, args, ("Running", "Error"), "stop")
    await instances.stop(call.server.orchestrator, vm.id)
    await _record(call, vm.id, "VM.STOP", "stopped instance")
    return await _answer(call, vm.id)


@_lifecycle("rebootVirtualMachine", "Reboots a running instance", "VM.REBOOT")
async def reboot_virtual_machine(call, args) -> ObjectResult:
    vm = await _vm_for_job(call, args, ("Running",), "reboot")
    await instances.reboot(call.server.orchestrator, vm.id)
    await _record(call, vm.id, "VM.REBOOT", "rebooted instance")
    return await _answer(call, vm.id)


@_lifecycle("destroyVirtualMachine", "Destroys an instance (recoverable until expunged)",
            "VM.DESTROY", extra=(Param("expunge", "boolean",
                                       description="expunge at once (admins, or when "
                                       "allow.user.expunge.recover.vm)"),))
async def destroy_virtual_machine(call, args) -> ObjectResult:
    vm = await _vm_for_job(call, args, ("Running", "Stopped", "Error", "Starting"), "destroy")
    async with call.server.db.sessions() as session:
        answer = (await vm_answers(session, [vm], call.caller.is_root_admin))[0]
    await instances.destroy(call.server.orchestrator, vm.id, expunge=bool(args["expunge"]))
    await _record(call, vm.id, "VM.DESTROY", "destroyed instance")
    if args["expunge"]:
        answer["state"] = "Expunging"
        return ObjectResult("virtualmachine", answer)
    return await _answer(call, vm.id)


@command(
    "expungeVirtualMachine",
    description="Expunges a destroyed instance: its address and everything on the host go",
    params=[Param("id", "uuid", required=True, resource="virtualmachine")],
    is_async=True,
    instance_type="VirtualMachine",
    prepare=_check_vm,
    since="4.2.0",
)
async def expunge_virtual_machine(call, args) -> PlainResult:
    vm = await _vm_for_job(call, args, ("Destroyed",), "expunge")
    await instances.expunge_vm(call.server.orchestrator, vm.id)
    await _record(call, vm.id, "VM.EXPUNGE", "expunged instance")
    return PlainResult({"success": True})


@command(
    "recoverVirtualMachine",
    description="Recovers a destroyed instance (it comes back Stopped, with its address)",
    params=[Param("id", "uuid", required=True, resource="virtualmachine")],
    response="virtualmachine",
    since="2.0.0",
)
async def recover_virtual_machine(call, args) -> ObjectResult:
    vm = await _vm_for_job(call, args, ("Destroyed",), "recover")
    await instances.recover(call.server.orchestrator, vm.id)
    await _record(call, vm.id, "VM.RECOVER", "recovered instance")
    return await _answer(call, vm.id)


# -- listings ----------------------------------------------------------------------------


@command(
    "listVirtualMachines",
    description="Lists instances",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="virtualmachine"),
        Param("ids", "list", items="uuid"),
        Param("name"),
        Param("state", description="Running, Stopped, Destroyed, ..."),
        Param("zoneid", "uuid"),
        Param("networkid", "uuid"),
        Param("hostid", "uuid", description="admin"),
        Param("templateid", "uuid"),
        Param("serviceofferingid", "uuid"),
        Param("details", "list", description="accepted for compatibility"),
    ],
    list_key="virtualmachine",
    since="2.0.0",
)
async def list_virtual_machines(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(VmInstance).where(VmInstance.type == "User", VmInstance.live())
        query = await scoped(session, call.caller, args, query, VmInstance)
        if args["id"]:
            query = query.where(VmInstance.uuid == args["id"])
        if args["ids"]:
            query = query.where(VmInstance.uuid.in_(args["ids"]))
        if args["name"]:
            query = query.where(VmInstance.host_name == args["name"])
        if args["state"]:
            query = query.where(VmInstance.state == args["state"].capitalize())
        if args["zoneid"]:
            query = query.where(of_uuid(VmInstance.zone_id, Zone, args["zoneid"]))
        if args["hostid"]:
            query = query.where(of_uuid(VmInstance.host_id, Host, args["hostid"]))
        if args["templateid"]:
            query = query.where(of_uuid(VmInstance.template_id, Template, args["templateid"]))
        if args["serviceofferingid"]:
            query = query.where(of_uuid(VmInstance.service_offering_id, ServiceOffering,
                                        args["serviceofferingid"]))
        if args["networkid"]:
            query = query.where(VmInstance.id.in_(select(Nic.vm_id).where(
                Nic.live(), of_uuid(Nic.network_id, Network, args["networkid"]))))
        if args["keyword"]:
            query = query.where(VmInstance.host_name.contains(args["keyword"], autoescape=True))
        vms, total = await paged(session, query.order_by(VmInstance.id), args)
        return ListResult("virtualmachine",
                          await vm_answers(session, vms, call.caller.is_root_admin), total)


@command(
    "listNics",
    description="Lists the NICs of an instance",
    params=[
        *PAGING,
        Param("virtualmachineid", "uuid", required=True, resource="virtualmachine"),
        Param("nicid", "uuid"),
        Param("networkid", "uuid"),
    ],
    list_key="nic",
    since="4.2.0",
)
async def list_nics(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        vm = await visible_vm(session, call, args["virtualmachineid"])
        query = select(Nic).where(Nic.vm_id == vm.id, Nic.live())
        if args["nicid"]:
            query = query.where(Nic.uuid == args["nicid"])
        if args["networkid"]:
            query = query.where(of_uuid(Nic.network_id, Network, args["networkid"]))
        nics, total = await paged(session, query.order_by(Nic.device_id), args)
        nets = {n.id: n for n in (await session.scalars(select(Network).where(
            Network.id.in_({n.network_id for n in nics if n.network_id})))).all()}
        return ListResult("nic", [nic_fields(n, nets.get(n.network_id)) |
                                  {"virtualmachineid": vm.uuid} for n in nics], total)
