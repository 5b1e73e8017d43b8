"""Domain subtrees and who sees which rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from mgmt.db.engine import Database
from mgmt.db.models import (
    Account,
    AccountType,
    AsyncJob,
    Domain,
    Event,
    Project,
    Role,
    RoleType,
    User,
)
from mgmt.db.tenancy import Caller, domain_subtree_ids, owned_by


@dataclass
class World:
    domains: dict[str, Domain]  # by path
    accounts: dict[str, Account]  # by name


async def _world(db: Database) -> World:
    """ROOT, ROOT/a_b, ROOT/a_b/leaf, ROOT/axb (a LIKE trap for a_b), ROOT/a%."""
    async with db.sessions() as session, session.begin():
        role = Role(name="User", type=RoleType.USER)
        session.add(role)
        domains: dict[str, Domain] = {}
        for path in ("ROOT", "ROOT/a_b", "ROOT/a_b/leaf", "ROOT/axb", "ROOT/a%", "ROOT/a_b2"):
            parent = domains.get(path.rsplit("/", 1)[0]) if "/" in path else None
            domain = Domain(
                name=path.rsplit("/", 1)[-1], path=path, level=path.count("/"),
                parent_id=parent.id if parent else None,
            )
            session.add(domain)
            await session.flush()
            domains[path] = domain
        accounts: dict[str, Account] = {}
        for name, path, type_ in (
            ("root", "ROOT", AccountType.ROOT_ADMIN),
            ("ab-admin", "ROOT/a_b", AccountType.DOMAIN_ADMIN),
            ("ab-user", "ROOT/a_b", AccountType.USER),
            ("leaf-user", "ROOT/a_b/leaf", AccountType.USER),
            ("axb-user", "ROOT/axb", AccountType.USER),
        ):
            account = Account(
                name=name, type=type_, domain_id=domains[path].id, role_id=role.id
            )
            session.add(account)
            await session.flush()
            accounts[name] = account
            session.add(User(username=name, account_id=account.id))
            session.add(Project(name=f"p-{name}", domain_id=account.domain_id,
                                account_id=account.id))
            session.add(Event(type="TEST", account_id=account.id, domain_id=account.domain_id))
            session.add(AsyncJob(cmd="x", kind="x", account_id=account.id))
    return World(domains, accounts)


def _caller(world: World, name: str) -> Caller:
    account = world.accounts[name]
    domain = next(d for d in world.domains.values() if d.id == account.domain_id)
    return Caller(user_id=0, account_id=account.id, account_type=account.type,
                  domain_id=domain.id, domain_path=domain.path)


async def test_subtree_is_the_domain_and_its_descendants_only(db: Database) -> None:
    world = await _world(db)
    ids = {d.id: path for path, d in world.domains.items()}
    async with db.sessions() as session:
        assert {ids[i] for i in await domain_subtree_ids(session, world.domains["ROOT/a_b"].id)} \
            == {"ROOT/a_b", "ROOT/a_b/leaf"}
        assert {ids[i] for i in await domain_subtree_ids(session, world.domains["ROOT/a%"].id)} \
            == {"ROOT/a%"}
        assert len(await domain_subtree_ids(session, world.domains["ROOT"].id)) == 6
        assert await domain_subtree_ids(session, 123456) == []


async def test_removed_domains_leave_the_subtree_unless_asked(db: Database) -> None:
    world = await _world(db)
    async with db.sessions() as session, session.begin():
        leaf = await session.get_one(Domain, world.domains["ROOT/a_b/leaf"].id)
        leaf.remove()
    async with db.sessions() as session:
        top = world.domains["ROOT/a_b"].id
        assert await domain_subtree_ids(session, top) == [top]
        assert len(await domain_subtree_ids(session, top, include_removed=True)) == 2


async def _visible(db: Database, model: type, caller: Caller) -> set[int]:
    async with db.sessions() as session:
        query = owned_by(select(model), model, caller)
        return {row.account_id for row in await session.scalars(query)}


async def test_who_sees_which_rows(db: Database) -> None:
    world = await _world(db)
    acc = {name: a.id for name, a in world.accounts.items()}
    root, admin, user = (_caller(world, n) for n in ("root", "ab-admin", "ab-user"))
    for model in (Project, Event, AsyncJob, User):  # domain_id and/or account_id columns
        assert await _visible(db, model, root) == set(acc.values())
        assert await _visible(db, model, admin) == {
            acc["ab-admin"], acc["ab-user"], acc["leaf-user"]
        }, model.__name__
        assert await _visible(db, model, user) == {acc["ab-user"]}, model.__name__


async def test_accounts_and_domains_visibility(db: Database) -> None:
    world = await _world(db)
    admin, user = _caller(world, "ab-admin"), _caller(world, "leaf-user")
    async with db.sessions() as session:
        names = set(await session.scalars(owned_by(select(Account.name), Account, admin)))
        assert names == {"ab-admin", "ab-user", "leaf-user"}
        names = set(await session.scalars(owned_by(select(Account.name), Account, user)))
        assert names == {"leaf-user"}
        paths = set(await session.scalars(owned_by(select(Domain.path), Domain, admin)))
        assert paths == {"ROOT/a_b", "ROOT/a_b/leaf"}
        paths = set(await session.scalars(owned_by(select(Domain.path), Domain, user)))
        assert paths == {"ROOT/a_b/leaf"}
