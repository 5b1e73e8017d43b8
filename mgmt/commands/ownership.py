"""Owner fields of an answer (account, domain, project) and jobs that touch several
networks, shared by the load-balancing and VPN commands."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from mgmt.db.models import Account, Domain, Project
from mgmt.db.tenancy import PROJECT_ACCOUNT
from mgmt.orchestration import sync
from mgmt.orchestration.documents import Key


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
