"""Projects: createProject, listProjects, updateProject, deleteProject,
addAccountToProject, deleteAccountFromProject, listProjectAccounts.

As in CloudStack, a project has an account of its own (type 5, no users) that
owns the project's resources (registerTemplate projectid=...); the accounts in
``project_accounts`` are its members, role Admin (the owner) or Regular. Members
see the project and use its resources; admins see the projects of their domains.
Anyone else gets the answer for a missing project id.
"""

from __future__ import annotations

import uuid as uuidlib

from sqlalchemy import and_, or_, select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import PAGING, Param, command
from mgmt.commands.common import date, new_id, not_found, paged
from mgmt.db.models import Account, Domain, Project, ProjectAccount, Role
from mgmt.db.models.catalog import Template
from mgmt.db.settings import get_setting
from mgmt.db.tenancy import PROJECT_ACCOUNT, in_subtree, owned_by
from mgmt.db.types import utcnow

ROLES = ("Admin", "Regular")


def visible_clause(caller):
    """Projects the caller sees: member of, or (admins) in its domain subtree."""
    if caller.is_root_admin:
        return None
    member = Project.id.in_(
        select(ProjectAccount.project_id).where(
            ProjectAccount.account_id == caller.account_id, ProjectAccount.live()
        )
    )
    if caller.is_domain_admin:
        return or_(
            member, Project.domain_id.in_(select(Domain.id).where(in_subtree(caller.domain_path)))
        )
    return member


async def visible_project(session, caller, uuid: str) -> Project:
    """A live project the caller may see; otherwise the missing-id answer."""
    query = select(Project).where(Project.uuid == uuid, Project.live())
    clause = visible_clause(caller)
    project = await session.scalar(query if clause is None else query.where(clause))
    if project is None:
        raise not_found("project", uuid)
    return project


async def _managed_project(session, caller, uuid: str) -> Project:
    """A project the caller may change: its project admin, or an admin over its domain."""
    project = await visible_project(session, caller, uuid)
    if caller.is_root_admin:
        return project
    if caller.is_domain_admin and await session.scalar(
        owned_by(select(Domain.id).where(Domain.id == project.domain_id), Domain, caller)
    ):
        return project
    role = await session.scalar(
        select(ProjectAccount.role).where(
            ProjectAccount.project_id == project.id,
            ProjectAccount.account_id == caller.account_id,
            ProjectAccount.live(),
        )
    )
    if role != "Admin":
        raise ApiError(531, f"the caller's account is not an admin of project {uuid}")
    return project


async def _members(session, project_ids) -> list:
    return list(
        (
            await session.execute(
                select(ProjectAccount, Account, Domain)
                .join(Account, Account.id == ProjectAccount.account_id)
                .join(Domain, Domain.id == Account.domain_id)
                .where(ProjectAccount.project_id.in_(list(project_ids)), ProjectAccount.live())
                .order_by(ProjectAccount.id)
            )
        ).all()
    )


def project_fields(p: Project, domain: Domain, members: list) -> dict:
    owners = [a.name for pa, a, _ in members if pa.project_id == p.id and pa.role == "Admin"]
    return {
        "id": p.uuid,
        "name": p.name,
        "displaytext": p.display_text,
        "domainid": domain.uuid,
        "domain": domain.name,
        "account": owners[0] if owners else None,
        "owner": [{"account": name} for name in owners],
        "state": p.state,
        "created": date(p.created),
        "tags": [],
    }


async def _answer(session, project: Project) -> ObjectResult:
    domain = await session.get(Domain, project.domain_id)
    return ObjectResult(
        "project", project_fields(project, domain, await _members(session, [project.id]))
    )


async def _owner_for_create(session, call, args) -> Account:
    """The account that will own the new project: the caller's, or (admins) account+domainid."""
    caller = call.caller
    if args["domainid"]:
        domain = await session.scalar(
            owned_by(
                select(Domain).where(Domain.uuid == args["domainid"], Domain.live()), Domain, caller
            )
        )
        if domain is None:
            raise not_found("domain", args["domainid"])
        if not args["account"]:
            return await session.get(Account, caller.account_id)
        owner = await session.scalar(
            select(Account).where(
                Account.domain_id == domain.id,
                Account.name == args["account"],
                Account.live(),
                Account.type != PROJECT_ACCOUNT,
            )
        )
        if owner is None:
            raise param_error(
                f"Unable to find account {args['account']} in domain {args['domainid']}"
            )
        return owner
    if args["account"] and not (caller.is_root_admin or caller.is_domain_admin):
        raise param_error("account can be given by admins only (with domainid)")
    if args["account"]:
        owner = await session.scalar(
            select(Account).where(
                Account.domain_id == caller.domain_id,
                Account.name == args["account"],
                Account.live(),
                Account.type != PROJECT_ACCOUNT,
            )
        )
        if owner is None:
            raise param_error(f"Unable to find account {args['account']} in the caller's domain")
        return owner
    return await session.get(Account, caller.account_id)


async def _check_create(call, args) -> dict:
    async with call.server.db.sessions() as session:
        owner = await _owner_for_create(session, call, args)
        caller = call.caller
        if not (caller.is_root_admin or caller.is_domain_admin) and not await get_setting(
            session, "allow.user.create.projects", {"domain": caller.domain_id}
        ):
            raise ApiError(
                531, "users may not create projects here (allow.user.create.projects is false)"
            )
        if await session.scalar(
            select(Project.id).where(
                Project.domain_id == owner.domain_id, Project.name == args["name"], Project.live()
            )
        ):
            raise param_error(f"a project named {args['name']} exists already in the domain")
    return {}


@command(
    "createProject",
    description="Creates a project; the caller's account (or account+domainid) owns it",
    params=[
        Param("name", required=True, description="project name"),
        Param("displaytext", length=4096, description="description (default: the name)"),
        Param("account", description="owner account (admins, with domainid)"),
        Param("domainid", "uuid", description="domain of the owner account", resource="domain"),
        Param("userid", "uuid", description="accepted for compatibility"),
    ],
    is_async=True,
    creates=True,
    response="project",
    instance_type="Project",
    prepare=_check_create,
    since="3.0.0",
)
async def create_project(call, args) -> ObjectResult:
    await _check_create(call, args)
    async with call.server.db.sessions() as session:
        owner = await _owner_for_create(session, call, args)
        role_id = await session.scalar(
            select(Role.id).where(Role.type == "User", Role.live()).order_by(Role.id)
        )
        own = Account(
            name=f"PrjAcct-{args['name']}-{uuidlib.uuid4().hex[:8]}",
            type=PROJECT_ACCOUNT,
            domain_id=owner.domain_id,
            role_id=role_id,
        )
        session.add(own)
        await session.flush()
        project = Project(
            **new_id(args),
            name=args["name"],
            display_text=args["displaytext"] or args["name"],
            domain_id=owner.domain_id,
            account_id=own.id,
        )
        session.add(project)
        await session.flush()
        session.add(ProjectAccount(project_id=project.id, account_id=owner.id, role="Admin"))
        await session.commit()
        answer = await _answer(session, project)
    await call.server.events.record(
        call, "PROJECT.CREATE", f"created project {args['name']}", project
    )
    return answer


@command(
    "listProjects",
    description="Lists the projects the caller is a member of (admins: of their domains)",
    params=[
        *PAGING,
        Param("id", "uuid", resource="project"),
        Param("name"),
        Param("displaytext"),
        Param("state", choices=("Active", "Suspended")),
        Param("account", description="projects this account is a member of"),
        Param("domainid", "uuid", resource="domain"),
        Param("listall", "boolean", description="accepted for compatibility"),
        Param("isrecursive", "boolean", description="with domainid: subdomains too"),
    ],
    list_key="project",
    since="3.0.0",
)
async def list_projects(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = (
            select(Project, Domain)
            .join(Domain, Domain.id == Project.domain_id)
            .where(Project.live())
        )
        clause = visible_clause(call.caller)
        if clause is not None:
            query = query.where(clause)
        if args["id"]:
            query = query.where(Project.uuid == args["id"])
        if args["name"]:
            query = query.where(Project.name == args["name"])
        if args["displaytext"]:
            query = query.where(Project.display_text == args["displaytext"])
        if args["state"]:
            query = query.where(Project.state == args["state"])
        if args["keyword"]:
            query = query.where(Project.name.contains(args["keyword"], autoescape=True))
        if args["domainid"]:
            domain = await session.scalar(
                owned_by(
                    select(Domain).where(Domain.uuid == args["domainid"], Domain.live()),
                    Domain,
                    call.caller,
                )
            )
            if domain is None:
                raise not_found("domain", args["domainid"])
            query = query.where(
                in_subtree(domain.path) if args["isrecursive"] else Domain.id == domain.id
            )
        if args["account"]:
            query = query.where(
                Project.id.in_(
                    select(ProjectAccount.project_id)
                    .join(Account, Account.id == ProjectAccount.account_id)
                    .where(Account.name == args["account"], ProjectAccount.live())
                )
            )
        rows, total = await paged(session, query.order_by(Project.id), args, rows=True)
        members = await _members(session, [p.id for p, _ in rows]) if rows else []
        return ListResult("project", [project_fields(p, d, members) for p, d in rows], total)


async def _check_managed(call, args) -> dict:
    async with call.server.db.sessions() as session:
        project = await _managed_project(session, call.caller, args.get("projectid") or args["id"])
    return {"jobinstanceid": project.uuid}


@command(
    "updateProject",
    description="Changes a project's name or display text",
    params=[
        Param("id", "uuid", required=True, resource="project"),
        Param("displaytext", length=4096),
        Param("name", since="4.19.0"),
    ],
    is_async=True,
    response="project",
    instance_type="Project",
    resumable=True,
    prepare=_check_managed,
    since="3.0.0",
)
async def update_project(call, args) -> ObjectResult:
    async with call.server.db.sessions() as session:
        project = await _managed_project(session, call.caller, args["id"])
        if args["name"] and args["name"] != project.name:
            if await session.scalar(
                select(Project.id).where(
                    Project.domain_id == project.domain_id,
                    Project.name == args["name"],
                    Project.live(),
                )
            ):
                raise param_error(f"a project named {args['name']} exists already in the domain")
            project.name = args["name"]
        if args["displaytext"] is not None:
            project.display_text = args["displaytext"]
        await session.commit()
        answer = await _answer(session, project)
    await call.server.events.record(
        call, "PROJECT.UPDATE", f"updated project {project.name}", project
    )
    return answer


@command(
    "deleteProject",
    description="Deletes a project that owns no resources",
    params=[
        Param("id", "uuid", required=True, resource="project"),
        Param("cleanup", "boolean", description="accepted for compatibility"),
    ],
    is_async=True,
    instance_type="Project",
    resumable=True,
    prepare=_check_managed,
    since="3.0.0",
)
async def delete_project(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        project = await _managed_project(session, call.caller, args["id"])
        templates = await session.scalar(
            select(Template.id)
            .where(Template.account_id == project.account_id, Template.live())
            .limit(1)
        )
        if templates:
            raise ApiError(
                536, f"project {project.name} still owns templates or ISOs; delete them first"
            )
        now = utcnow()
        for member in (
            await session.scalars(
                select(ProjectAccount).where(
                    ProjectAccount.project_id == project.id, ProjectAccount.live()
                )
            )
        ).all():
            member.removed = now
        own = await session.get(Account, project.account_id)
        if own is not None and own.type == PROJECT_ACCOUNT:
            own.removed = now
        project.removed = now
        await session.commit()
    await call.server.events.record(
        call, "PROJECT.DELETE", f"deleted project {project.name}", project
    )
    return PlainResult({"success": True})


async def _member_account(session, project: Project, name: str) -> Account:
    account = await session.scalar(
        select(Account).where(
            Account.domain_id == project.domain_id,
            Account.name == name,
            Account.live(),
            Account.type != PROJECT_ACCOUNT,
        )
    )
    if account is None:
        raise param_error(f"Unable to find account {name} in the domain of project {project.uuid}")
    return account


@command(
    "addAccountToProject",
    description="Adds an account of the project's domain to the project",
    params=[
        Param("projectid", "uuid", required=True, resource="project"),
        Param("account", description="the account's name"),
        Param("roletype", choices=ROLES, description="Admin or Regular (default)", since="4.15.0"),
        Param("email", description="invitations are not supported; accepted for compatibility"),
    ],
    is_async=True,
    instance_type="Project",
    resumable=True,
    prepare=_check_managed,
    since="3.0.0",
)
async def add_account_to_project(call, args) -> PlainResult:
    if not args["account"]:
        raise param_error("missing parameter account (invitations by email are not supported)")
    async with call.server.db.sessions() as session:
        project = await _managed_project(session, call.caller, args["projectid"])
        account = await _member_account(session, project, args["account"])
        existing = await session.scalar(
            select(ProjectAccount).where(
                ProjectAccount.project_id == project.id,
                ProjectAccount.account_id == account.id,
                ProjectAccount.live(),
            )
        )
        if existing is None:
            session.add(
                ProjectAccount(
                    project_id=project.id, account_id=account.id, role=args["roletype"] or "Regular"
                )
            )
        elif existing.role != (args["roletype"] or existing.role):
            raise param_error(
                f"account {account.name} is already a member of project "
                f"{project.name} ({existing.role})"
            )
        await session.commit()
    await call.server.events.record(
        call,
        "PROJECT.ACCOUNT.ADD",
        f"added account {account.name} to project {project.name}",
        project,
    )
    return PlainResult({"success": True})


@command(
    "deleteAccountFromProject",
    description="Removes an account from a project (not its last admin)",
    params=[
        Param("projectid", "uuid", required=True, resource="project"),
        Param("account", required=True, description="the account's name"),
    ],
    is_async=True,
    instance_type="Project",
    resumable=True,
    prepare=_check_managed,
    since="3.0.0",
)
async def delete_account_from_project(call, args) -> PlainResult:
    async with call.server.db.sessions() as session:
        project = await _managed_project(session, call.caller, args["projectid"])
        account = await _member_account(session, project, args["account"])
        members = (
            await session.scalars(
                select(ProjectAccount).where(
                    ProjectAccount.project_id == project.id, ProjectAccount.live()
                )
            )
        ).all()
        member = next((m for m in members if m.account_id == account.id), None)
        if member is None:
            raise param_error(f"account {account.name} is not a member of project {project.name}")
        if member.role == "Admin" and sum(m.role == "Admin" for m in members) == 1:
            raise param_error(
                f"account {account.name} is the only admin (owner) of project "
                f"{project.name}; it cannot be removed"
            )
        member.removed = utcnow()
        await session.commit()
    await call.server.events.record(
        call,
        "PROJECT.ACCOUNT.REMOVE",
        f"removed account {account.name} from project {project.name}",
        project,
    )
    return PlainResult({"success": True})


@command(
    "listProjectAccounts",
    description="Lists the accounts of a project",
    params=[
        *PAGING,
        Param("projectid", "uuid", required=True, resource="project"),
        Param("account", description="the account's name"),
        Param("role", choices=ROLES),
    ],
    list_key="projectaccount",
    since="3.0.0",
)
async def list_project_accounts(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        project = await visible_project(session, call.caller, args["projectid"])
        query = (
            select(ProjectAccount, Account, Domain)
            .join(Account, Account.id == ProjectAccount.account_id)
            .join(Domain, Domain.id == Account.domain_id)
            .where(and_(ProjectAccount.project_id == project.id, ProjectAccount.live()))
        )
        if args["account"]:
            query = query.where(Account.name == args["account"])
        if args["role"]:
            query = query.where(ProjectAccount.role == args["role"])
        if args["keyword"]:
            query = query.where(Account.name.contains(args["keyword"], autoescape=True))
        rows, total = await paged(session, query.order_by(ProjectAccount.id), args, rows=True)
        return ListResult(
            "projectaccount",
            [
                {
                    "projectid": project.uuid,
                    "project": project.name,
                    "accountid": a.uuid,
                    "account": a.name,
                    "accounttype": a.type,
                    "role": pa.role,
                    "domainid": d.uuid,
                    "domain": d.name,
                }
                for pa, a, d in rows
            ],
            total,
        )
