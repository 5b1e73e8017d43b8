"""Public IP addresses: taking a free one and giving it back.

Taking an address is one conditional UPDATE of a Free row (``WHERE state =
'Free'``): of two jobs, or two management servers, that pick the same row,
exactly one changes it and the other tries the next row, so an address is
never handed out twice.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select, update

from mgmt.api.errors import ApiError
from mgmt.db.models.infra import PublicIp
from mgmt.db.types import utcnow

INSUFFICIENT_ADDRESSES = 533
CANDIDATES = 16


async def allocate(db, zone_id: int, account_id: int, network_id: int | None, *,
                   source_nat: bool = False, address: str | None = None) -> PublicIp:
    """Take a free public address of the zone (``address`` if given) for the account."""
    while True:
        async with db.sessions() as session:
            query = select(PublicIp.id).where(PublicIp.zone_id == zone_id, PublicIp.live(),
                                              PublicIp.state == "Free")
            if address is not None:
                query = query.where(PublicIp.address == address)
            candidates = list((await session.scalars(
                query.order_by(PublicIp.id).limit(CANDIDATES))).all())
            if not candidates:
                if address is not None:
                    raise ApiError(431, f"public IP {address} is not a free address of the zone")
                raise ApiError(INSUFFICIENT_ADDRESSES,
                               "Insufficient address capacity: the zone has no free public IP "
                               "address left (add a range with createVlanIpRange)")
            # Start at a random candidate: concurrent jobs rarely collide on the same row.
            start = secrets.randbelow(len(candidates))
            for row_id in candidates[start:] + candidates[:start]:
                result = await session.execute(
                    update(PublicIp).where(PublicIp.id == row_id, PublicIp.state == "Free")
                    .values(state="Allocated", account_id=account_id, network_id=network_id,
                            source_nat=source_nat, allocated=utcnow()))
                if result.rowcount:  # type: ignore[attr-defined]
                    await session.commit()
                    return await session.get_one(PublicIp, row_id)
            await session.rollback()


async def release(db, ip_id: int) -> None:
    """Give an address back to the zone's free pool."""
    async with db.sessions() as session, session.begin():
        await release_in(session, ip_id)


async def release_in(session, ip_id: int) -> None:
    """``release`` inside the caller's transaction."""
    await session.execute(
        update(PublicIp).where(PublicIp.id == ip_id)
        .values(state="Free", account_id=None, network_id=None, source_nat=False,
                static_nat_vm_id=None, static_nat_ip=None, allocated=None))
