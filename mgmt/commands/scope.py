"""Whose resources a listing shows: CloudStack's account, domainid, isrecursive,
listall and projectid, the same for every list command of account-owned things.

As CloudStack's buildACLSearchParameters has it:

* a user sees its own account's resources, whatever it asks for;
* an admin without ``listall`` sees its own account's (an ``id`` is looked up
  in everything it may see); with ``listall``, everything it may see (a root
  admin: all; a domain admin: its subtree);
* ``domainid`` narrows to that domain (``isrecursive``: and its subdomains);
  with ``account``, to that account of the domain (``account`` alone: of the
  caller's domain);
* ``projectid`` lists the project's resources instead (the caller must be a
  member, or an admin over the project's domain); ``projectid=-1``, those of
  every project the caller may use. Without it, project resources are left out
  unless an ``id`` is asked for.

A domain, account or project the caller may not see answers exactly as a
missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, or_, select

from mgmt.api.errors import param_error
from mgmt.commands.common import not_found, paged
from mgmt.commands.projects import visible_clause
from mgmt.db.models import Account, Domain, Project
from mgmt.db.tenancy import PROJECT_ACCOUNT, Caller, in_subtree, owned_by

ALL_PROJECTS = "-1"


async def scoped(session, caller: Caller, args: dict[str, Any], query, model):
    """``query`` over ``model`` (which has ``account_id``) narrowed as described above."""
    account_id = model.account_id
    query = owned_by(query, model, caller, with_projects=True)
    project = args.get("projectid")
    if project:
        return query.where(account_id.in_(await _project_accounts(session, caller, project)))
    if not args.get("id"):
        query = query.where(or_(account_id.is_(None), account_id.not_in(_project_accounts_all())))
    if args.get("domainid") or args.get("account"):
        return query.where(await _named_owner(session, caller, args, model))
    if _is_user(caller) or not (args.get("listall") or args.get("id")):
        return query.where(account_id == caller.account_id)
    return query


async def scoped_page(
    session, call, args: dict[str, Any], model, **filters: Callable[[Any], ColumnElement]
) -> tuple[list, int]:
    """A list command's page of live ``model`` rows, ``scoped`` and ordered by id, with
    ``id`` and each parameter of ``filters`` that was given: ``filters[name](value)``."""
    query = await scoped(session, call.caller, args, select(model).where(model.live()), model)
    if args["id"]:
        query = query.where(model.uuid == args["id"])
    for name, condition in filters.items():
        if args[name]:
            query = query.where(condition(args[name]))
    return await paged(session, query.order_by(model.id), args)


def _is_user(caller: Caller) -> bool:
    return not (caller.is_root_admin or caller.is_domain_admin)


def _project_accounts_all():
    return select(Account.id).where(Account.type == PROJECT_ACCOUNT)


async def _project_accounts(session, caller: Caller, project: str) -> list[int]:
    visible = select(Project.account_id).where(Project.live())
    clause = visible_clause(caller)
    if clause is not None:
        visible = visible.where(clause)
    if project == ALL_PROJECTS:
        return list(await session.scalars(visible))
    found = await session.scalar(visible.where(Project.uuid == project))
    if found is None:
        raise not_found("project", project)
    return [found]


async def _named_owner(session, caller: Caller, args: dict[str, Any], model) -> ColumnElement:
    """The rows of ``domainid`` (and subdomains) or of ``account`` in a domain."""
    domain: Domain | None = None
    if args.get("domainid"):
        domain = await session.scalar(
            owned_by(
                select(Domain).where(Domain.uuid == args["domainid"], Domain.live()),
                Domain,
                caller,
            )
        )
        if domain is None:
            raise not_found("domain", args["domainid"])
    if args.get("account"):
        domain_id = domain.id if domain else caller.domain_id
        account = await session.scalar(
            owned_by(
                select(Account.id).where(
                    Account.domain_id == domain_id,
                    Account.name == args["account"],
                    Account.live(),
                ),
                Account,
                caller,
            )
        )
        if account is None:
            where = f"domain {args['domainid']}" if domain else "the caller's domain"
            raise param_error(f"Unable to find account {args['account']} in {where}")
        return model.account_id == account
    if _is_user(caller):  # the only domain a user sees is its own: its account's rows
        return model.account_id == caller.account_id
    in_domain = in_subtree(domain.path) if args.get("isrecursive") else Domain.id == domain.id
    domains = select(Domain.id).where(in_domain)
    if hasattr(model, "domain_id"):
        return model.domain_id.in_(domains)
    return model.account_id.in_(select(Account.id).where(Account.domain_id.in_(domains)))
