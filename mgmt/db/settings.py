"""Global settings kept in the Configuration table, with typed defaults.

Names follow CloudStack's where it has one. Values are stored as text and
parsed by the setting's type when read.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models import Configuration

Value = bool | int | float | str


@dataclass(frozen=True)
class Setting:
    name: str
    default: Value
    category: str
    description: str
    scope: str = "global"

    @property
    def type(self) -> str:
        return type_name(self.default)


DEFAULTS: tuple[Setting, ...] = (
    Setting("api.throttling.enabled", True, "Advanced",
            "Limit how many API requests one account may make per interval."),
    Setting("api.throttling.interval", 1, "Advanced",
            "Length of the API throttling window, in seconds."),
    Setting("api.throttling.max", 500, "Advanced",
            "API requests one account may make per api.throttling.interval."),
    Setting("job.expire.minutes", 1440, "Advanced",
            "Minutes a finished async job is kept before it is purged."),
    Setting("job.cancel.threshold.minutes", 60, "Advanced",
            "Minutes an async job may run before it is failed as stuck."),
    Setting("session.timeout.minutes", 30, "Advanced",
            "Minutes of inactivity after which a login session ends."),
)

BY_NAME = {setting.name: setting for setting in DEFAULTS}


def type_name(value: Value) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    return "String"


def render(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse(type_: str, text: str) -> Value:
    """Parse a stored value; ValueError names the type when it does not fit."""
    if type_ == "Boolean":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"{text!r} is not a boolean (true or false)")
        return lowered == "true"
    if type_ == "Integer":
        return int(text)
    if type_ == "Float":
        return float(text)
    return text


async def ensure_defaults(session: AsyncSession) -> list[str]:
    """Insert the settings not in the table yet; returns their names."""
    existing = set((await session.scalars(select(Configuration.name))).all())
    added = []
    for setting in DEFAULTS:
        if setting.name in existing:
            continue
        session.add(
            Configuration(
                name=setting.name,
                value=render(setting.default),
                default_value=render(setting.default),
                type=setting.type,
                category=setting.category,
                description=setting.description,
                scope=setting.scope,
            )
        )
        added.append(setting.name)
    return added


async def get_setting(session: AsyncSession, name: str) -> Value:
    """The setting's typed value: the stored one, else its default."""
    row = await session.scalar(
        select(Configuration).where(Configuration.name == name, Configuration.live())
    )
    if row is not None and row.value is not None:
        return parse(row.type, row.value)
    if name in BY_NAME:
        return BY_NAME[name].default
    raise KeyError(f"unknown setting {name!r}")
