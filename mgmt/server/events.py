"""Events: one row per state change, for listEvents and for operators."""

from __future__ import annotations

from typing import Any

from mgmt.db.engine import Database
from mgmt.db.models import Event


class EventLog:
    def __init__(self, db: Database):
        self.db = db

    async def record(
        self, call, type_: str, description: str, resource: Any = None, level: str = "INFO"
    ) -> None:
        caller = call.caller
        async with self.db.sessions() as session:
            session.add(
                Event(
                    type=type_,
                    level=level,
                    description=description,
                    state="Completed",
                    account_id=caller.account_id if caller else None,
                    user_id=caller.user_id if caller else None,
                    domain_id=caller.domain_id if caller else None,
                    resource_type=type(resource).__name__ if resource is not None else None,
                    resource_uuid=getattr(resource, "uuid", None),
                )
            )
            await session.commit()
