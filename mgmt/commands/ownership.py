"""Who owns a new object (account, domainid, projectid), the owner fields of an
answer, and the ends of jobs that touch networks, shared by the network, load
balancing and VPN commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from mgmt.api.envelope import ObjectResult, PlainResult
from mgmt.api.errors import param_error
from mgmt.api.registry import Param
from mgmt.commands.common import not_found
from mgmt.commands.projects import visible_project
from mgmt.db.models import Account, Domain, Project
from mgmt.db.tenancy import PROJECT_ACCOUNT, owned_by
from mgmt.orchestration import sync
from mgmt.orchestration.documents import Key


def owner_params() -> list[Param]:
    """The parameters that name a new object's owner (see ``owner_account``)."""
    return [
        Param("account", description="the owner account (with domainid)"),
        Param("domainid", "uuid", resource="domain", description="the owner's domain"),
        Param("projectid", "uuid", resource="project", description="the owner project"),
    ]


async def visible_domain(session, call, uuid: str) -> Domain:
    """A domain the caller may act in (the same answer for a foreign and a missing id)."""
    domain = await session.scalar(
        owned_by(select(Domain).where(Domain.uuid == uuid, Domain.live()), Domain, call.caller)
    )
    if domain is None:
        raise not_found("domain", uuid)
    return domain


async def owner_account(
    session, call, account: str | None, domainid: str | None, projectid: str | None
) -> Account:
    """The account a new object belongs to: the caller's, account+domainid, or the
    project's own account."""
    if projectid:
        project = await visible_project(session, call.caller, projectid)
        return await session.get_one(Account, project.account_id)
    domain = await visible_domain(session, call, domainid) if domainid else None
    if account is None:
        if domain is not None and domain.id != call.caller.domain_id:
            raise param_error("account must be given with domainid")
        return await session.get(Account, call.caller.account_id)
    domain_id = domain.id if domain else call.caller.domain_id
    owner = await session.scalar(
        owned_by(
            select(Account).where(
                Account.name == account, Account.domain_id == domain_id, Account.live()
            ),
            Account,
            call.caller,
        )
    )
    if owner is None:
        raise param_error(f"Unable to find account {account} in the domain")
    return owner


async def owner_of(call, args: dict[str, Any]) -> Account:
    """``owner_account`` of a command's ``owner_params``, in a session of its own."""
    async with call.server.db.sessions() as session:
        return await owner_account(
            session, call, args["account"], args["domainid"], args["projectid"]
        )


async def check_owner(call, args: dict[str, Any]) -> dict:
    """An async command's ``prepare``: a bad or foreign owner is refused at once."""
    await owner_of(call, args)
    return {}


async def owner_fields(session, account_id: int, domain_id: int) -> dict:
    """``account``, ``domainid``, ``domain`` (and ``projectid``/``project`` when a
    project owns it), as every CloudStack answer of an owned object carries them."""
    account = await session.get(Account, account_id)
    domain = await session.get(Domain, domain_id)
    out: dict = {
        "domainid": domain.uuid if domain else None,
        "domain": domain.name if domain else None,
    }
    if account is not None and account.type == PROJECT_ACCOUNT:
        project = await session.scalar(select(Project).where(Project.account_id == account.id))
        if project is not None:
            out.update(projectid=project.uuid, project=project.name)
    elif account is not None:
        out["account"] = account.name
    return out


async def apply_to_networks(orch, network_ids: Iterable[int], keys: list[Key]) -> None:
    """Apply one job's items to several networks (a VPN user goes to every remote
    access VPN of its account), or settle them when no network carries them."""
    ids = sorted(set(network_ids))
    if not ids:
        await sync.apply_change(orch, -1, keys)  # no router: the items are settled
        return
    for network_id in ids:
        await sync.apply_change(orch, network_id, keys)


async def revoked(
    call, network_ids: Iterable[int], key: Key, event: str, description: str, row
) -> PlainResult:
    """The end of a job that revoked ``row`` (item ``key``): its removal applied to the
    networks that carried it, its event, and success."""
    await apply_to_networks(call.server.orchestrator, network_ids, [key])
    await call.server.events.record(call, event, description, row)
    return PlainResult({"success": True})


async def recorded_answer(
    call,
    model,
    row_id: int,
    event: str,
    describe: Callable[[Any], str],
    key: str,
    answer: Callable[[Any, Any], Any],
) -> ObjectResult:
    """The end of a job that changed a row: the row as it is now, its event (described
    by ``describe(row)``) and the answer ``key``: ``await answer(session, row)``."""
    async with call.server.db.sessions() as session:
        row = await session.get_one(model, row_id)
        await call.server.events.record(call, event, describe(row), row)
        return ObjectResult(key, await answer(session, row))
