"""Who may see which rows: domain subtrees and the ownership filter for listings.

A root admin sees everything; a domain admin sees rows of its domain and the
domains under it; a user sees its own account's rows. Domain paths look like
``ROOT/sub/leaf``; a subtree is the path itself plus everything under
``path/`` (LIKE with the name's ``%`` and ``_`` escaped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models import Account, AccountType, Domain

Q = TypeVar("Q", bound=Select[Any])


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


def owned_by(query: Q, model: Any, caller: Caller) -> Q:
    """Restrict ``query`` over ``model`` to the rows ``caller`` may see.

    Works for Domain, Account, and any model with an ``account_id`` and/or
    ``domain_id`` column. Domain admins are matched by ``domain_id`` when the
    model has one, else through the row's account.
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
    if caller.is_domain_admin:
        domains = _subtree_domain_ids(caller.domain_path)
        if domain_id is not None:
            return query.where(domain_id.in_(domains))
        accounts = select(Account.id).where(Account.domain_id.in_(domains))
        return query.where(account_id.in_(accounts))
    if account_id is not None:
        return query.where(account_id == caller.account_id)
    return query.where(domain_id == caller.domain_id)
