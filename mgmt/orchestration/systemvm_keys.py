"""The system VMs' symmetric keys, kept in the keystore table beside the appliance CA.

Per zone: the console proxy's token keys (AES-256-GCM, appliances.common.console_token)
and the storage VM's transfer key (HMAC of upload signatures and extract tokens,
appliances.storage.signing). Every management server of the database reads the
same rows, so a token one server issues opens on the proxy another server
configured. The first server that needs a key creates it; one that loses that
race (the live-name unique index) reads the winner's.

A row's ``private_key`` holds the secret: for the console, a JSON list of base64
keys, the current one first and the previous one after it while a rotation is
recent (tokens sealed just before the rotation still open); ``certificate`` is
empty (a symmetric key has none).
"""

from __future__ import annotations

import json
import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from appliances.common.console_token import encode_key, new_key
from mgmt.db.models.compute import KeystoreEntry

CONSOLE = "console-token-keys:"
STORAGE = "storage-transfer-key:"
#: Keys a console document carries at most: the current one and the previous one.
KEPT = 2


async def _get_or_create(db, name: str, make) -> str:
    async with db.sessions() as session:
        found = await session.scalar(
            select(KeystoreEntry.private_key).where(
                KeystoreEntry.name == name, KeystoreEntry.live()
            )
        )
    if found is not None:
        return found
    try:
        async with db.sessions() as session, session.begin():
            session.add(KeystoreEntry(name=name, certificate="", private_key=make()))
    except IntegrityError:
        pass  # another server made it first: read theirs
    async with db.sessions() as session:
        return await session.scalar(
            select(KeystoreEntry.private_key).where(
                KeystoreEntry.name == name, KeystoreEntry.live()
            )
        )


async def console_keys(db, zone_uuid: str) -> list[str]:
    """The zone console proxy's token keys (base64), the current one first."""
    text = await _get_or_create(
        db, CONSOLE + zone_uuid, lambda: json.dumps([encode_key(new_key())])
    )
    return list(json.loads(text))


async def rotate_console_keys(db, zone_uuid: str) -> list[str]:
    """A new current key; the old current one stays as the previous one (the oldest
    goes). One conditional UPDATE: of two servers rotating at once, one rotates and the
    other reads the result. Push the console document afterwards."""
    old = await console_keys(db, zone_uuid)
    new = [encode_key(new_key()), *old][:KEPT]
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(KeystoreEntry)
            .where(
                KeystoreEntry.name == CONSOLE + zone_uuid,
                KeystoreEntry.live(),
                KeystoreEntry.private_key == json.dumps(old),
            )
            .values(private_key=json.dumps(new))
        )
    return await console_keys(db, zone_uuid)


async def storage_key(db, zone_uuid: str) -> str:
    """The zone storage VM's transfer key: 64 URL-safe characters."""
    return await _get_or_create(db, STORAGE + zone_uuid, lambda: secrets.token_urlsafe(48))
