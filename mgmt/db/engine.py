"""Opening the database: SQLite (embedded default) or PostgreSQL (several servers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from mgmt.db import sqlite_driver  # noqa: F401  (registers sqlite+skiff)
from mgmt.db.migrate import upgrade as upgrade_schema

SQLITE_BUSY_TIMEOUT_MS = 10_000

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+skiff",
    "sqlite+aiosqlite": "sqlite+skiff",
    "sqlite+skiff": "sqlite+skiff",
}


def async_url(url: str) -> str:
    """Rewrite a database URL to the async driver Skiff uses for its dialect.

    A bare path (no ``://``) is taken as a SQLite file.
    """
    if "://" not in url:
        return f"sqlite+skiff:///{Path(url).expanduser().resolve()}"
    scheme, rest = url.split("://", 1)
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use postgresql://USER@HOST/DB "
            "or sqlite:///PATH"
        )
    return f"{driver}://{rest}"


def database_url(home: Path, db: str | None) -> str:
    """The URL to open: ``db`` if given, else ``<home>/skiff.db`` (SQLite)."""
    if db is None:
        return f"sqlite+skiff:///{(home / 'skiff.db').expanduser().resolve()}"
    return async_url(db)


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    dialect: str
    #: A small pool of its own for the short writes commands make while their own
    #: session still holds a connection (events): they never wait for the main pool,
    #: so many concurrent calls that each hold a connection cannot starve each other.
    side_engine: AsyncEngine | None = None
    side_sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def side(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for writes nested in another session (never nest further in them)."""
        return self.side_sessions or self.sessions

    async def close(self) -> None:
        if self.side_engine is not None:
            await self.side_engine.dispose()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers wait."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _make_engine(url: str, side: bool = False) -> AsyncEngine:
    """The main engine, or (``side``) the small one of Database.side_sessions."""
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Sessions wait for a connection rather than open a thread each (see
        # mgmt.db.sqlite_driver: reads go one at a time anyway).
        engine = create_async_engine(url, pool_size=2 if side else 10,
                                     max_overflow=3 if side else 10)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if dialect == "postgresql":
        if side:
            return create_async_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=3)
        return create_async_engine(url, pool_pre_ping=True)
    raise ValueError(f"unsupported database dialect {dialect!r}")


async def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open ``url`` (see database_url) and, by default, migrate it to the newest schema."""
    url = async_url(url)
    engine = _make_engine(url)
    db = Database(
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        dialect=engine.dialect.name,
    )
    if make_url(url).database not in (None, "", ":memory:"):  # in memory: one database
        db.side_engine = _make_engine(url, side=True)
        db.side_sessions = async_sessionmaker(db.side_engine, expire_on_commit=False)
    if migrate:
        try:
            await upgrade_schema(engine)
        except BaseException:
            await db.close()
            raise
    return db
