"""The management server's tables.

Every table has an internal integer ``id``, a public ``uuid`` (what the API
shows as ``id``), ``created`` and ``removed``. Rows are soft-deleted by setting
``removed`` so that listings CloudStack keeps showing (events, jobs, removed
accounts with ``listall``) still can; live-row uniqueness is enforced by
partial unique indexes ``WHERE removed IS NULL``.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum

from sqlalchemy import (
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mgmt.db.types import UTCDateTime, new_uuid, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LIVE = text("removed IS NULL")


def live_unique(name: str, *columns: str) -> Index:
    """A unique index over rows that are not removed (SQLite and PostgreSQL)."""
    return Index(name, *columns, unique=True, sqlite_where=LIVE, postgresql_where=LIVE)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Common:
    """Columns every table has."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    removed: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    def remove(self) -> None:
        """Soft-delete: the row stays, listings of live rows no longer show it."""
        if self.removed is None:
            self.removed = utcnow()

    @classmethod
    def live(cls) -> ColumnElement[bool]:
        """WHERE clause for rows that are not removed."""
        return cls.removed.is_(None)  # type: ignore[attr-defined,no-any-return]


class AccountType(IntEnum):
    """CloudStack's ``accounttype``."""

    USER = 0
    ROOT_ADMIN = 1
    DOMAIN_ADMIN = 2


class RoleType(StrEnum):
    ADMIN = "Admin"
    DOMAIN_ADMIN = "DomainAdmin"
    USER = "User"


class JobStatus(IntEnum):
    PENDING = 0
    SUCCEEDED = 1
    FAILED = 2


class Domain(Common, Base):
    """ROOT and its sub-domains; ``path`` is ``ROOT/sub/leaf`` as listDomains shows it."""

    __tablename__ = "domains"
    __table_args__ = (live_unique("uq_domains_live_path", "path"),)

    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)
    level: Mapped[int] = mapped_column(Integer, default=0)


class Role(Common, Base):
    __tablename__ = "roles"
    __table_args__ = (live_unique("uq_roles_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Account(Common, Base):
    __tablename__ = "accounts"
    __table_args__ = (live_unique("uq_accounts_live_domain_name", "domain_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[int] = mapped_column(Integer, default=AccountType.USER)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="enabled")


class User(Common, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(255), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    firstname: Mapped[str | None] = mapped_column(String(255))
    lastname: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    api_key: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    secret_key: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="enabled")


class Project(Common, Base):
    __tablename__ = "projects"
    __table_args__ = (live_unique("uq_projects_live_domain_name", "domain_id", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str | None] = mapped_column(Text)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="Active")


class ProjectAccount(Common, Base):
    __tablename__ = "project_accounts"
    __table_args__ = (
        live_unique("uq_project_accounts_live_member", "project_id", "account_id"),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="Regular")


class ApiSession(Common, Base):
    """A login session (``sessionkey``), in the database so every server knows it."""

    __tablename__ = "api_sessions"

    key: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Zone(Common, Base):
    __tablename__ = "zones"
    __table_args__ = (live_unique("uq_zones_live_name", "name"),)

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    network_type: Mapped[str] = mapped_column(String(16), default="Advanced")
    dns1: Mapped[str | None] = mapped_column(String(64))
    dns2: Mapped[str | None] = mapped_column(String(64))
    internal_dns1: Mapped[str | None] = mapped_column(String(64))
    internal_dns2: Mapped[str | None] = mapped_column(String(64))
    guest_cidr: Mapped[str | None] = mapped_column(String(64))
    allocation_state: Mapped[str] = mapped_column(String(16), default="Disabled")
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)


class AsyncJob(Common, Base):
    """An async command: queryAsyncJobResult reads it; ``owner`` is the server running it.

    ``result`` and ``params`` are JSON text. ``heartbeat`` is refreshed by the
    owner while the job runs, so other servers can tell a dead owner.
    """

    __tablename__ = "async_jobs"
    __table_args__ = (Index("ix_async_jobs_status_owner", "status", "owner"),)

    cmd: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(255))
    instance_type: Mapped[str | None] = mapped_column(String(64))
    instance_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[int] = mapped_column(Integer, default=JobStatus.PENDING)
    proc_status: Mapped[int] = mapped_column(Integer, default=0)
    result_code: Mapped[int] = mapped_column(Integer, default=0)
    result_type: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(Text)
    params: Mapped[str] = mapped_column(Text, default="{}")
    resumable: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(255))
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Common, Base):
    __tablename__ = "events"

    type: Mapped[str] = mapped_column(String(64), index=True)
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="Completed")
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id"), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_uuid: Mapped[str | None] = mapped_column(String(36), index=True)


class Configuration(Common, Base):
    """A global setting (listConfigurations / updateConfiguration).

    ``scope`` is the level the setting applies at (global, zone, account,
    domain); ``type`` says how ``value`` parses (see mgmt.db.settings).
    """

    __tablename__ = "configuration"

    name: Mapped[str] = mapped_column(String(255), unique=True)
    value: Mapped[str | None] = mapped_column(Text)
    default_value: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), default="String")
    category: Mapped[str] = mapped_column(String(64), default="Advanced")
    description: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(16), default="global")
    scope_id: Mapped[int | None] = mapped_column(Integer)
