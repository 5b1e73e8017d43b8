"""First start: the ROOT domain, default roles, the ``admin`` account and settings.

Idempotent: later starts find everything and change nothing. The generated
admin password exists in clear only in ``<home>/admin.json`` (mode 0600,
``<home>`` 0700); the database keeps its scrypt hash.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.catalog_defaults import ensure_catalog_defaults
from mgmt.db.engine import Database
from mgmt.db.models import Account, AccountType, Domain, Role, RoleType, User
from mgmt.db.passwords import hash_password
from mgmt.db.secretfile import private_dir, publish, read_json, stage_private_json
from mgmt.db.settings import ensure_defaults

ROOT_DOMAIN = "ROOT"
ADMIN = "admin"
CREDENTIALS_FILE = "admin.json"
# pg_advisory_xact_lock key: servers starting together on one database bootstrap in turn.
BOOTSTRAP_LOCK = 0x5C1FF_0002

DEFAULT_ROLES = (
    ("Root Admin", RoleType.ADMIN, "Default root admin role"),
    ("Domain Admin", RoleType.DOMAIN_ADMIN, "Default domain admin role"),
    ("User", RoleType.USER, "Default user role"),
)


@dataclass(frozen=True)
class BootstrapResult:
    created: bool  # True only on the call that created the admin user
    username: str
    password: str | None  # from admin.json; None if that file is gone
    apikey: str | None
    secretkey: str | None
    credentials_file: Path


def new_api_key() -> str:
    """86 URL-safe characters, the shape of CloudStack's keys."""
    return secrets.token_urlsafe(64)


def new_password() -> str:
    return secrets.token_urlsafe(18)


async def _root_domain(session: AsyncSession) -> Domain:
    root = await session.scalar(
        select(Domain).where(Domain.path == ROOT_DOMAIN, Domain.live())
    )
    if root is None:
        root = Domain(name=ROOT_DOMAIN, path=ROOT_DOMAIN, parent_id=None, level=0)
        session.add(root)
        await session.flush()
    return root


async def _default_roles(session: AsyncSession) -> dict[str, Role]:
    roles = {}
    for name, type_, description in DEFAULT_ROLES:
        role = await session.scalar(select(Role).where(Role.name == name, Role.live()))
        if role is None:
            role = Role(name=name, type=type_.value, description=description, is_default=True)
            session.add(role)
        roles[name] = role
    await session.flush()
    return roles


async def _admin_account(session: AsyncSession, root: Domain, role: Role) -> Account:
    account = await session.scalar(
        select(Account).where(
            Account.domain_id == root.id, Account.name == ADMIN, Account.live()
        )
    )
    if account is None:
        account = Account(
            name=ADMIN, type=AccountType.ROOT_ADMIN, domain_id=root.id, role_id=role.id
        )
        session.add(account)
        await session.flush()
    return account


async def _bootstrap_once(db: Database, path: Path) -> BootstrapResult:
    staged: Path | None = None
    try:
        async with db.sessions() as session, session.begin():
            if db.dialect == "postgresql":
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": BOOTSTRAP_LOCK}
                )
            root = await _root_domain(session)
            roles = await _default_roles(session)
            account = await _admin_account(session, root, roles["Root Admin"])
            await ensure_defaults(session)
            await ensure_catalog_defaults(session)
            user = await session.scalar(
                select(User).where(
                    User.account_id == account.id, User.username == ADMIN, User.live()
                )
            )
            if user is not None:
                saved = read_json(path)
                password = saved.get("password") if isinstance(saved, dict) else None
                return BootstrapResult(
                    False, ADMIN, password, user.api_key, user.secret_key, path
                )
            password = new_password()
            user = User(
                username=ADMIN,
                account_id=account.id,
                firstname="Admin",
                lastname="User",
                password_hash=await asyncio.to_thread(hash_password, password),
                api_key=new_api_key(),
                secret_key=new_api_key(),
            )
            session.add(user)
            await session.flush()
            # Written before the commit (a full disk fails the whole bootstrap),
            # renamed into place after it (the file never names keys the
            # database does not have).
            staged = stage_private_json(
                path,
                {
                    "username": ADMIN,
                    "password": password,
                    "apikey": user.api_key,
                    "secretkey": user.secret_key,
                },
            )
        publish(staged, path)
        staged = None
        return BootstrapResult(True, ADMIN, password, user.api_key, user.secret_key, path)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


async def bootstrap(db: Database, home: Path) -> BootstrapResult:
    """Create what a first start needs; return the admin's credentials."""
    private_dir(home)
    path = home / CREDENTIALS_FILE
    try:
        return await _bootstrap_once(db, path)
    except IntegrityError:
        # Another server (on SQLite, without an advisory lock) won the race: read its rows.
        return await _bootstrap_once(db, path)
