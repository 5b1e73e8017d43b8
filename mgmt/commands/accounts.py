"""Domains, accounts, users and roles."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from mgmt.api.envelope import ListResult, ObjectResult, PlainResult
from mgmt.api.errors import ApiError, param_error
from mgmt.api.registry import ADMINS, PAGING, SCOPE, Param, command
from mgmt.commands.common import date, not_found, paged
from mgmt.db.models import Account, AccountType, Domain, Role, User
from mgmt.db.passwords import hash_password
from mgmt.db.tenancy import PROJECT_ACCOUNT, in_subtree, owned_by
from mgmt.db.types import utcnow

ROLE_TYPE_OF = {
    AccountType.ROOT_ADMIN: "Admin",
    AccountType.DOMAIN_ADMIN: "DomainAdmin",
    AccountType.USER: "User",
}


def domain_fields(d: Domain, parent: Domain | None, has_child: bool) -> dict:
    return {
        "id": d.uuid,
        "name": d.name,
        "level": d.level,
        "path": d.path,
        "parentdomainid": parent.uuid if parent else None,
        "parentdomainname": parent.name if parent else None,
        "haschild": has_child,
        "created": date(d.created),
        "state": "Active",
    }


async def _visible_domain(session, call, uuid: str) -> Domain:
    query = owned_by(
        select(Domain).where(Domain.uuid == uuid, Domain.removed.is_(None)), Domain, call.caller
    )
    domain = await session.scalar(query)
    if domain is None:
        raise not_found("domain", uuid)
    return domain


@command(
    "createDomain",
    description="Creates a domain under a parent domain (default: the caller's)",
    params=[
        Param("name", required=True, description="domain name"),
        Param("parentdomainid", "uuid", description="parent domain", resource="domain"),
        Param("networkdomain", description="DNS domain for networks in this domain"),
    ],
    response="domain",
    roles=ADMINS,
    since="1.0.0",
)
async def create_domain(call, args) -> ObjectResult:
    if "/" in args["name"]:
        raise param_error("a domain name cannot contain '/'")
    async with call.server.db.sessions() as session:
        parent = (
            await _visible_domain(session, call, args["parentdomainid"])
            if args["parentdomainid"]
            else await session.get(Domain, call.caller.domain_id)
        )
        path = f"{parent.path}/{args['name']}"
        if await session.scalar(
            select(Domain.id).where(Domain.path == path, Domain.removed.is_(None))
        ):
            raise ApiError(431, f"domain {path} exists already")
        domain = Domain(name=args["name"], path=path, parent_id=parent.id, level=parent.level + 1)
        session.add(domain)
        await session.commit()
        await call.server.events.record(call, "DOMAIN.CREATE", f"created domain {path}", domain)
        return ObjectResult("domain", domain_fields(domain, parent, False))


@command(
    "listDomains",
    description="Lists the domains the caller may see",
    params=[
        *PAGING,
        Param("id", "uuid", resource="domain"),
        Param("name"),
        Param("level", "integer"),
        Param("listall", "boolean", description="the whole visible tree"),
    ],
    list_key="domain",
    roles=ADMINS,
    since="1.0.0",
)
async def list_domains(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = owned_by(select(Domain).where(Domain.removed.is_(None)), Domain, call.caller)
        if args["id"]:
            query = query.where(Domain.uuid == args["id"])
        if args["name"]:
            query = query.where(Domain.name == args["name"])
        if args["level"] is not None:
            query = query.where(Domain.level == args["level"])
        if args["keyword"]:
            query = query.where(Domain.name.contains(args["keyword"], autoescape=True))
        domains, total = await paged(session, query.order_by(Domain.path), args)
        ids = {d.parent_id for d in domains if d.parent_id}
        parents = (
            {
                d.id: d
                for d in (await session.scalars(select(Domain).where(Domain.id.in_(ids)))).all()
            }
            if ids
            else {}
        )
        with_children = set(
            (
                await session.scalars(
                    select(Domain.parent_id).where(
                        Domain.parent_id.in_([d.id for d in domains]), Domain.removed.is_(None)
                    )
                )
            ).all()
        )
        items = [domain_fields(d, parents.get(d.parent_id), d.id in with_children) for d in domains]
        return ListResult("domain", items, total)


async def _check_domain_deletable(call, args) -> dict:
    async with call.server.db.sessions() as session:
        domain = await _visible_domain(session, call, args["id"])
        if domain.parent_id is None:
            raise ApiError(431, "the ROOT domain cannot be deleted")
        if domain.id == call.caller.domain_id:
            raise ApiError(431, "a domain admin cannot delete its own domain")
        return {"jobinstanceid": domain.uuid}


@command(
    "deleteDomain",
    description="Deletes an empty domain (cleanup=true also removes its accounts)",
    params=[Param("id", "uuid", required=True, resource="domain"), Param("cleanup", "boolean")],
    is_async=True,
    roles=ADMINS,
    instance_type="Domain",
    resumable=True,
    prepare=_check_domain_deletable,
    since="1.0.0",
)
async def delete_domain(call, args) -> PlainResult:
    await _check_domain_deletable(call, args)  # again: a resumed job had no prepare step
    async with call.server.db.sessions() as session:
        domain = await _visible_domain(session, call, args["id"])
        subtree = list(
            (
                await session.scalars(
                    select(Domain).where(in_subtree(domain.path), Domain.removed.is_(None))
                )
            ).all()
        )
        accounts = list(
            (
                await session.scalars(
                    select(Account).where(
                        Account.domain_id.in_([d.id for d in subtree]), Account.removed.is_(None)
                    )
                )
            ).all()
        )
        if accounts and not args["cleanup"]:
            raise ApiError(
                536,
                f"domain {domain.path} still has {len(accounts)} account(s); "
                "delete them first or pass cleanup=true",
            )
        now = utcnow()
        for row in [*accounts, *subtree]:
            row.removed = now
        await session.commit()
        await call.server.events.record(
            call, "DOMAIN.DELETE", f"deleted domain {domain.path}", domain
        )
    return PlainResult({"success": True})


def account_fields(a: Account, d: Domain, role: Role | None, users: list[User]) -> dict:
    return {
        "id": a.uuid,
        "name": a.name,
        "accounttype": a.type,
        "state": a.state,
        "domainid": d.uuid,
        "domain": d.name,
        "domainpath": d.path,
        "roleid": role.uuid if role else None,
        "rolename": role.name if role else None,
        "roletype": ROLE_TYPE_OF.get(a.type),
        "created": date(a.created),
        "user": [user_fields(u, a, d) for u in users],
    }


def user_fields(u: User, a: Account, d: Domain) -> dict:
    return {
        "id": u.uuid,
        "username": u.username,
        "firstname": u.firstname,
        "lastname": u.lastname,
        "email": u.email,
        "state": u.state,
        "created": date(u.created),
        "account": a.name,
        "accountid": a.uuid,
        "accounttype": a.type,
        "roletype": ROLE_TYPE_OF.get(a.type),
        "domainid": d.uuid,
        "domain": d.name,
    }


@command(
    "createAccount",
    description="Creates an account with its first user",
    params=[
        Param("username", required=True),
        Param("password", required=True),
        Param("email", required=True),
        Param("firstname", required=True),
        Param("lastname", required=True),
        Param("account", description="account name (default: the user name)"),
        Param("accounttype", "short", description="0 user, 2 domain admin, 1 root admin"),
        Param("roleid", "uuid", description="role (instead of accounttype)"),
        Param("domainid", "uuid", description="domain (default: the caller's)", resource="domain"),
    ],
    response="account",
    roles=ADMINS,
    since="1.0.0",
)
async def create_account(call, args) -> ObjectResult:
    account_type = (
        AccountType(args["accounttype"] or 0) if (args["accounttype"] or 0) in (0, 1, 2) else None
    )
    if account_type is None:
        raise param_error("accounttype must be 0 (user), 1 (root admin) or 2 (domain admin)")
    if account_type == AccountType.ROOT_ADMIN and not call.caller.is_root_admin:
        raise ApiError(531, "only a root admin can create root admin accounts")
    name = args["account"] or args["username"]
    async with call.server.db.sessions() as session:
        domain = (
            await _visible_domain(session, call, args["domainid"])
            if args["domainid"]
            else await session.get(Domain, call.caller.domain_id)
        )
        if await session.scalar(
            select(Account.id).where(
                Account.name == name, Account.domain_id == domain.id, Account.removed.is_(None)
            )
        ):
            raise ApiError(431, f"an account named {name} exists in {domain.path}")
        role = await session.scalar(
            select(Role).where(Role.type == ROLE_TYPE_OF[account_type], Role.removed.is_(None))
        )
        account = Account(name=name, type=account_type, domain_id=domain.id, role_id=role.id)
        session.add(account)
        await session.flush()
        user = User(
            username=args["username"],
            account_id=account.id,
            firstname=args["firstname"],
            lastname=args["lastname"],
            email=args["email"],
            password_hash=await asyncio.to_thread(hash_password, args["password"]),
        )
        session.add(user)
        await session.commit()
        await call.server.events.record(call, "ACCOUNT.CREATE", f"created account {name}", account)
        return ObjectResult("account", account_fields(account, domain, role, [user]))


@command(
    "listAccounts",
    description="Lists the accounts the caller may see",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="account"),
        Param("name"),
        Param("accounttype", "short"),
        Param("state"),
    ],
    list_key="account",
    since="1.0.0",
)
async def list_accounts(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = owned_by(select(Account).where(Account.removed.is_(None)), Account, call.caller)
        query = query.where(Account.type != PROJECT_ACCOUNT)  # projects' own accounts
        if args["id"]:
            query = query.where(Account.uuid == args["id"])
        if args["name"]:
            query = query.where(Account.name == args["name"])
        if args["accounttype"] is not None:
            query = query.where(Account.type == args["accounttype"])
        if args["domainid"]:
            domain = await _visible_domain(session, call, args["domainid"])
            query = query.where(
                Account.domain_id.in_(select(Domain.id).where(in_subtree(domain.path)))
                if args["isrecursive"]
                else Account.domain_id == domain.id
            )
        if args["keyword"]:
            query = query.where(Account.name.contains(args["keyword"], autoescape=True))
        accounts, total = await paged(session, query.order_by(Account.id), args)
        # One query per kind for the whole page, not three per account.
        domains = {
            d.id: d
            for d in (
                await session.scalars(
                    select(Domain).where(Domain.id.in_({a.domain_id for a in accounts}))
                )
            ).all()
        }
        roles = {
            r.id: r
            for r in (
                await session.scalars(
                    select(Role).where(Role.id.in_({a.role_id for a in accounts}))
                )
            ).all()
        }
        users: dict[int, list[User]] = {a.id: [] for a in accounts}
        for u in (
            await session.scalars(
                select(User)
                .where(User.account_id.in_(users), User.removed.is_(None))
                .order_by(User.id)
            )
        ).all():
            users[u.account_id].append(u)
        items = [
            account_fields(a, domains[a.domain_id], roles.get(a.role_id), users[a.id])
            for a in accounts
        ]
        return ListResult("account", items, total)


@command(
    "listUsers",
    description="Lists the users the caller may see",
    params=[
        *PAGING,
        *SCOPE,
        Param("id", "uuid", resource="user"),
        Param("username"),
        Param("state"),
    ],
    list_key="user",
    since="1.0.0",
)
async def list_users(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = owned_by(
            select(User, Account, Domain)
            .join(Account, User.account_id == Account.id)
            .join(Domain, Account.domain_id == Domain.id)
            .where(User.removed.is_(None)),
            Account,
            call.caller,
        )
        if args["id"]:
            query = query.where(User.uuid == args["id"])
        if args["username"]:
            query = query.where(User.username == args["username"])
        if args["account"]:
            query = query.where(Account.name == args["account"])
        rows = (await session.execute(query.order_by(User.id))).all()
        items = [user_fields(u, a, d) for u, a, d in rows]
        page, size = args["page"], args["pagesize"]
        if size:
            start = ((page or 1) - 1) * size
            return ListResult("user", items[start : start + size], len(items))
        return ListResult("user", items)


@command(
    "listRoles",
    description="Lists the roles",
    params=[Param("id", "uuid"), Param("name"), Param("type")],
    list_key="role",
    roles=ADMINS,
    since="4.9.0",
)
async def list_roles(call, args) -> ListResult:
    async with call.server.db.sessions() as session:
        query = select(Role).where(Role.removed.is_(None)).order_by(Role.id)
        if args["id"]:
            query = query.where(Role.uuid == args["id"])
        if args["name"]:
            query = query.where(Role.name == args["name"])
        if args["type"]:
            query = query.where(Role.type == args["type"])
        roles = (await session.scalars(query)).all()
        return ListResult(
            "role",
            [
                {
                    "id": r.uuid,
                    "name": r.name,
                    "type": r.type,
                    "description": r.description,
                    "isdefault": r.is_default,
                }
                for r in roles
            ],
        )
