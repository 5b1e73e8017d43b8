"""Who may see which rows: domain subtrees and the ownership filter for listings.

A root admin sees everything; a domain admin sees rows of its domain and the
domains under it; a user sees its own account's rows. Domain paths look like
``ROOT/sub/leaf``; a subtree is the path itself plus everything under
``path/`` (LIKE with the name's ``%`` and ``_`` escaped).

Projects, as in CloudStack: each project has an account of its own (type
PROJECT_ACCOUNT, no users) that owns the project's resources; the accounts
that are members of the project may use them (``owned_by(...,
with_projects=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models import Account, AccountType, Domain, Project, ProjectAccount

Q = TypeVar("Q", bound=Select[Any])

#: CloudStack's account type of a project's own account.
PROJECT_ACCOUNT = 5


@dataclass(frozen=True)
class Caller:
    """The authenticated user an API call runs as."""

    user_id: int
    account_id: int
    account_type: int
    domain_id: int
    domain_path: str

    @property
    def is_root_admin(self) -> bool:
        return self.account_type == AccountType.ROOT_ADMIN

    @property
    def is_domain_admin(self) -> bool:
        return self.account_type == AccountType.DOMAIN_ADMIN


def in_subtree(path: str) -> ColumnElement[bool]:
    """Domains at ``path`` or below it."""
    return or_(Domain.path == path, Domain.path.startswith(f"{path}/", autoescape=True))


async def domain_subtree_ids(
    session: AsyncSession, domain_id: int, *, include_removed: bool = False
) -> list[int]:
    """Ids of the domain and all its descendants (live ones unless include_removed)."""
    path = await session.scalar(select(Domain.path).where(Domain.id == domain_id))
    if path is None:
        return []
    query = select(Domain.id).where(in_subtree(path)).order_by(Domain.path)
    if not include_removed:
        query = query.where(Domain.live())
    return list(await session.scalars(query))


def _subtree_domain_ids(path: str) -> Select[tuple[int]]:
    return select(Domain.id).where(in_subtree(path))


def member_project_accounts(account_id: int) -> Select[tuple[int]]:
    """The project accounts of the live projects ``account_id`` is a member of."""
    return (
        select(Project.account_id)
        .join(ProjectAccount, ProjectAccount.project_id == Project.id)
        .where(ProjectAccount.account_id == account_id, ProjectAccount.removed.is_(None),
               Project.removed.is_(None))
    )


def owned_by(query: Q, model: Any, caller: Caller, *, with_projects: bool = False) -> Q:
    """Restrict ``query`` over ``model`` to the rows ``caller`` may see.

    Works for Domain, Account, and any model with an ``account_id`` and/or
    ``domain_id`` column. Domain admins are matched by ``domain_id`` when the
    model has one, else through the row's account. ``with_projects``: also the
    rows of the projects the caller's account is a member of.
    """
    if caller.is_root_admin:
        return query
    if model is Domain:
        if caller.is_domain_admin:
            return query.where(in_subtree(caller.domain_path))
        return query.where(Domain.id == caller.domain_id)
    if model is Account:
        if caller.is_domain_admin:
            return query.where(Account.domain_id.in_(_subtree_domain_ids(caller.domain_path)))
        return query.where(Account.id == caller.account_id)
    account_id = getattr(model, "account_id", None)
    domain_id = getattr(model, "domain_id", None)
    if account_id is None and domain_id is None:
        raise TypeError(f"{model.__name__} has neither account_id nor domain_id")
    projects = account_id.in_(member_project_accounts(caller.account_id)) \
        if with_projects and account_id is not None else None
    if caller.is_domain_admin:
        domains = _subtree_domain_ids(caller.domain_path)
        if domain_id is not None:
            clause = domain_id.in_(domains)
        else:
            clause = account_id.in_(select(Account.id).where(Account.domain_id.in_(domains)))
    elif account_id is not None:
        clause = account_id == caller.account_id
    else:
        clause = domain_id == caller.domain_id
    return query.where(clause if projects is None else or_(clause, projects))
