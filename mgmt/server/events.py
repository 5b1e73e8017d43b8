"""Events: one row per state change, for listEvents and for operators.

An event belongs to the account that owns the object it is about (else to the
caller), so the owner lists it; ``user_id`` is always who did it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mgmt.db.engine import Database
from mgmt.db.models import Account, Event, Project


class EventLog:
    def __init__(self, db: Database):
        self.db = db

    async def record(
        self, call, type_: str, description: str, resource: Any = None, level: str = "INFO"
    ) -> None:
        caller = call.caller
        account_id = caller.account_id if caller else None
        domain_id = caller.domain_id if caller else None
        # Commands record events inside their own sessions: a pool of its own, so
        # waiting for a connection here can never wait on those sessions.
        async with self.db.side() as session:
            # As in CloudStack, an event about an owned object is its owner's (an admin
            # creating a network for alice, or alice one in a project): they list it.
            # (A project's own account_id is its account, not its owner.)
            owner = None if isinstance(resource, Project) else getattr(resource, "account_id", None)
            if owner is not None and owner != account_id:
                account_id = owner
                domain_id = getattr(resource, "domain_id", None) or await session.scalar(
                    select(Account.domain_id).where(Account.id == owner)
                )
            session.add(
                Event(
                    type=type_,
                    level=level,
                    description=description,
                    state="Completed",
                    account_id=account_id,
                    user_id=caller.user_id if caller else None,
                    domain_id=domain_id,
                    resource_type=type(resource).__name__ if resource is not None else None,
                    resource_uuid=getattr(resource, "uuid", None),
                )
            )
            await session.commit()
