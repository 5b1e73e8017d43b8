"""Row locks that hold across management servers sharing one database.

A check-then-write (is this port free? is this address unused?) is only safe when
no other server can run the same check in between. ``lock_rows`` holds the rows
the decision is about until the session's transaction ends: ``SELECT ... FOR
UPDATE`` in PostgreSQL; SQLite has no row locks, so there a no-op UPDATE takes the
database's write lock (one writer at a time), which serialises the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession


async def lock_rows(session: AsyncSession, model: Any, *where: Any) -> None:
    """Lock ``model``'s rows matching ``where`` (in id order, so two lockers of
    overlapping sets cannot deadlock) until the transaction ends."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(model.id).where(*where).order_by(model.id).with_for_update())
    else:
        await session.execute(
            update(model).where(*where).values(id=model.id),
            execution_options={"synchronize_session": False},
        )
