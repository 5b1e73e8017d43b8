"""VPN secrets sealed at rest: preshared keys and VPN users' passwords.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21

The three secret columns become TEXT (a sealed 255-character key is about 400
characters) and every value in them is sealed with the database's key
(mgmt.db.sealing, whose v1 format is frozen; the key is created here when the
keystore has none yet). Async jobs made before this revision kept the same
secrets: their stored parameters lose them (those jobs are not resumable),
their answers lose the customer gateway's PSK, and a remote access VPN's
answer keeps its PSK sealed, as the job runner now stores it.

SQLite cannot change a column's type in place, and rebuilding a table that
others reference would trip their foreign keys: there each column is added
anew, filled, and renamed over the old one (SQLite's own DROP and RENAME
COLUMN). The downgrade opens the values again with the same key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from mgmt.db.sealing import (
    JOB_RESULT,
    KEY_NAME,
    RA_PSK,
    S2S_PSK,
    VPN_PASSWORD,
    Sealer,
    SealError,
    decode_key,
    encode_key,
    is_sealed,
    new_key,
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, purpose) of each sealed column.
SEALED = (
    ("remote_access_vpns", "preshared_key", RA_PSK),
    ("vpn_users", "password", VPN_PASSWORD),
    ("vpn_customer_gateways", "ipsec_psk", S2S_PSK),
)
#: Job parameters that were secrets, by command (async_jobs.kind).
SECRET_PARAMS = {
    "addvpnuser": "password",
    "createvpncustomergateway": "ipsecpsk",
    "updatevpncustomergateway": "ipsecpsk",
}
#: Answers that carried a customer gateway's PSK: command -> response object.
PSK_ANSWERS = {
    "createvpncustomergateway": "vpncustomergateway",
    "updatevpncustomergateway": "vpncustomergateway",
    "createvpnconnection": "vpnconnection",
    "resetvpnconnection": "vpnconnection",
}
RA_ANSWER = ("createremoteaccessvpn", "remoteaccessvpn", "presharedkey")

JOBS = sa.table(
    "async_jobs",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("params", sa.Text),
    sa.column("result", sa.Text),
)


def upgrade() -> None:
    bind = op.get_bind()
    for table, column, _ in SEALED:
        _retype(bind, table, column, sa.Text(), sa.String(255))
    sealer = _KeyOnce(bind, create=True)
    for table, column, purpose in SEALED:
        _rewrite(bind, table, column, sealer, purpose, seal=True)
    kinds = {*SECRET_PARAMS, *PSK_ANSWERS, RA_ANSWER[0]}
    query = sa.select(JOBS.c.id, JOBS.c.kind, JOBS.c.params, JOBS.c.result)
    for job_id, kind, params, result in bind.execute(query.where(JOBS.c.kind.in_(kinds))).all():
        values = {}
        data = _json(params)
        if kind in SECRET_PARAMS and _drop(data, SECRET_PARAMS[kind]):
            values["params"] = _dumps(data)
        data = _json(result)
        answer = data.get(PSK_ANSWERS.get(kind) or RA_ANSWER[1]) if isinstance(data, dict) else None
        if kind in PSK_ANSWERS and _drop(answer, "ipsecpsk"):
            values["result"] = _dumps(data)
        if kind == RA_ANSWER[0] and _reseal(answer, sealer, seal=True):
            values["result"] = _dumps(data)
        if values:
            bind.execute(JOBS.update().where(JOBS.c.id == job_id).values(**values))


def downgrade() -> None:
    bind = op.get_bind()
    sealer = _KeyOnce(bind, create=False)
    for table, column, purpose in SEALED:
        _rewrite(bind, table, column, sealer, purpose, seal=False)
    query = sa.select(JOBS.c.id, JOBS.c.result).where(JOBS.c.kind == RA_ANSWER[0])
    for job_id, result in bind.execute(query).all():
        data = _json(result)
        answer = data.get(RA_ANSWER[1]) if isinstance(data, dict) else None
        if _reseal(answer, sealer, seal=False):
            bind.execute(JOBS.update().where(JOBS.c.id == job_id).values(result=_dumps(data)))
    for table, column, _ in SEALED:
        _retype(bind, table, column, sa.String(255), sa.Text())


class _KeyOnce:
    """The database's sealer, read (or created) the first time a value needs it."""

    def __init__(self, bind, *, create: bool):
        self.bind, self.create, self.sealer = bind, create, None

    def __call__(self) -> Sealer:
        if self.sealer is None:
            self.sealer = Sealer(decode_key(_key_text(self.bind, self.create)))
        return self.sealer


def _key_text(bind, create: bool) -> str:
    keystore = sa.table(
        "keystore",
        sa.column("name", sa.String),
        sa.column("certificate", sa.Text),
        sa.column("private_key", sa.Text),
        sa.column("uuid", sa.String),
        sa.column("created", sa.DateTime(timezone=True)),
        sa.column("removed", sa.DateTime(timezone=True)),
    )
    text = bind.scalar(
        sa.select(keystore.c.private_key).where(
            keystore.c.name == KEY_NAME, keystore.c.removed.is_(None)
        )
    )
    if text is not None:
        return text
    if not create:
        raise SealError(f"sealed VPN secrets but no {KEY_NAME!r} key in the keystore")
    text = encode_key(new_key())
    created = datetime.now(UTC)
    if bind.dialect.name == "sqlite":  # naive UTC there, as mgmt.db.types stores it
        created = created.replace(tzinfo=None)
    bind.execute(
        keystore.insert().values(
            name=KEY_NAME,
            certificate="",
            private_key=text,
            uuid=str(uuid.uuid4()),
            created=created,
        )
    )
    return text


def _retype(bind, table: str, column: str, new: sa.types.TypeEngine, old: sa.types.TypeEngine):
    if bind.dialect.name != "sqlite":
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=False)
        return
    interim = f"{column}_retyped"
    op.add_column(table, sa.Column(interim, new, nullable=False, server_default=""))
    op.execute(f"UPDATE {table} SET {interim} = {column}")  # constants, not input
    op.drop_column(table, column)
    op.alter_column(table, interim, new_column_name=column)


def _rewrite(bind, table: str, column: str, sealer: _KeyOnce, purpose: str, *, seal: bool):
    """Seal (or, with ``seal=False``, open) every value of ``table.column``."""
    rows = sa.table(table, sa.column("id", sa.Integer), sa.column(column, sa.Text))
    for row_id, value in bind.execute(sa.select(rows.c.id, rows.c[column])).all():
        if value is None or is_sealed(value) == seal:
            continue
        new = sealer().seal(value, purpose) if seal else sealer().unseal(value, purpose)
        bind.execute(rows.update().where(rows.c.id == row_id).values({column: new}))


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))  # as mgmt.db.jobs stores it


def _drop(data: Any, name: str) -> bool:
    """Remove ``name`` from the dict ``data`` (any case, as clients spell parameters)."""
    if not isinstance(data, dict):
        return False
    keys = [k for k in data if k.lower() == name]
    for k in keys:
        del data[k]
    return bool(keys)


def _reseal(answer: Any, sealer: _KeyOnce, *, seal: bool) -> bool:
    """Seal (or open) a remote access VPN answer's preshared key in place."""
    value = answer.get(RA_ANSWER[2]) if isinstance(answer, dict) else None
    if not isinstance(value, str) or is_sealed(value) == seal:
        return False
    answer[RA_ANSWER[2]] = (
        sealer().seal(value, JOB_RESULT) if seal else sealer().unseal(value, JOB_RESULT)
    )
    return True
