"""Who is calling, from the database: API keys and login sessions."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from sqlalchemy import select, update

from mgmt.db.engine import Database
from mgmt.db.models import Account, ApiSession, Domain, User
from mgmt.db.passwords import check_password
from mgmt.db.tenancy import Caller
from mgmt.db.types import utcnow

#: Keys are looked up on every signed request; a short cache keeps the hot path off
#: the database while a disabled user or a new key still takes effect within seconds.
KEY_CACHE_SECONDS = 5.0
#: Sliding session expiry is written at most this often per session.
SESSION_TOUCH_SECONDS = 60.0


def _caller(user: User, account: Account, domain: Domain) -> Caller:
    return Caller(
        user_id=user.id,
        account_id=account.id,
        account_type=account.type,
        domain_id=domain.id,
        domain_path=domain.path,
    )


def _live_user_query():
    return (
        select(User, Account, Domain)
        .join(Account, User.account_id == Account.id)
        .join(Domain, Account.domain_id == Domain.id)
        .where(
            User.removed.is_(None),
            Account.removed.is_(None),
            User.state == "enabled",
            Account.state == "enabled",
        )
    )


class DbDirectory:
    def __init__(self, db: Database, session_timeout: float = 1800.0):
        self.db = db
        self.session_timeout = session_timeout
        self._keys: dict[str, tuple[float, tuple[Caller, str] | None]] = {}
        self._touched: dict[str, float] = {}

    async def by_api_key(self, api_key: str) -> tuple[Caller, str] | None:
        now = time.monotonic()
        cached = self._keys.get(api_key)
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        async with self.db.sessions() as session:
            row = (await session.execute(_live_user_query().where(User.api_key == api_key))).first()
        found = (_caller(*row), row[0].secret_key) if row and row[0].secret_key else None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[api_key] = (now, found)
        return found

    async def caller_of_user(self, user_id: int) -> Caller | None:
        async with self.db.sessions() as session:
            row = (await session.execute(_live_user_query().where(User.id == user_id))).first()
        return _caller(*row) if row else None

    def forget_key(self, api_key: str | None) -> None:
        if api_key:
            self._keys.pop(api_key, None)

    async def by_session(self, session_key: str) -> Caller | None:
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    _live_user_query()
                    .join(ApiSession, ApiSession.user_id == User.id)
                    .where(
                        ApiSession.key == session_key,
                        ApiSession.removed.is_(None),
                        ApiSession.expires > utcnow(),
                    )
                )
            ).first()
            if row is None:
                return None
            now = time.monotonic()
            if now - self._touched.get(session_key, 0.0) > SESSION_TOUCH_SECONDS:
                self._touched[session_key] = now
                await session.execute(
                    update(ApiSession)
                    .where(ApiSession.key == session_key)
                    .values(
                        last_seen=utcnow(),
                        expires=utcnow() + timedelta(seconds=self.session_timeout),
                    )
                )
                await session.commit()
        return _caller(*row)

    async def login(
        self, username: str, password: str, domain_path: str
    ) -> tuple[User, Account, Domain, str] | None:
        """Check a password; open a session and return its key (None: wrong credentials)."""
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    _live_user_query().where(User.username == username, Domain.path == domain_path)
                )
            ).first()
            if row is None or not row[0].password_hash:
                return None
            if not check_password(row[0].password_hash, password):
                return None
            key = secrets.token_urlsafe(32)
            session.add(
                ApiSession(
                    key=key,
                    user_id=row[0].id,
                    expires=utcnow() + timedelta(seconds=self.session_timeout),
                )
            )
            await session.commit()
            return (*row, key)

    async def logout(self, session_key: str) -> None:
        async with self.db.sessions() as session:
            await session.execute(
                update(ApiSession).where(ApiSession.key == session_key).values(removed=utcnow())
            )
            await session.commit()
        self._touched.pop(session_key, None)
