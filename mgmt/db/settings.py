"""Global settings kept in the Configuration table, with typed defaults.

Names follow CloudStack's where it has one. Values are stored as text and
parsed by the setting's type when read. A setting whose scope is zone, domain or
account may also have a value per zone, domain or account (table
``configuration_values``); :func:`get_setting` prefers the most specific one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mgmt.db.models import Configuration
from mgmt.db.models.misc import ConfigurationValue

Value = bool | int | float | str


@dataclass(frozen=True)
class Setting:
    name: str
    default: Value
    category: str
    description: str
    scope: str = "global"  # global, zone, domain or account
    #: Inclusive bounds of an Integer or Float setting ("Range"), or None.
    range: tuple[float, float] | None = None
    #: Applied at once (without a restart) when changed.
    dynamic: bool = True
    #: The values a String setting may take, or None for free text.
    choices: tuple[str, ...] | None = None

    @property
    def type(self) -> str:
        return type_name(self.default)

    def validate(self, text: str) -> Value:
        """The typed value of ``text``; ValueError says what was expected."""
        try:
            value = parse(self.type, text)
        except ValueError:
            kind = {"Integer": "a whole number", "Float": "a number",
                    "Boolean": "true or false"}.get(self.type, "text")
            raise ValueError(f"{text[:60]!r} is not {kind}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{text[:60]!r} is not one of {', '.join(self.choices)}")
        if self.range is not None:
            low, high = self.range
            if not low <= value <= high:  # type: ignore[operator]
                raise ValueError(f"{value} is outside the range {low:g}..{high:g}")
        return value


DEFAULTS: tuple[Setting, ...] = (
    Setting("api.throttling.enabled", True, "Advanced",
            "Limit how many API requests one account may make per interval."),
    Setting("api.throttling.interval", 1, "Advanced",
            "Length of the API throttling window, in seconds.", range=(1, 3600)),
    Setting("api.throttling.max", 500, "Advanced",
            "API requests one account may make per api.throttling.interval.",
            range=(0, 1_000_000)),
    Setting("allow.user.create.projects", True, "Project Defaults",
            "Whether users (not only admins) may create projects.", scope="domain"),
    Setting("cpu.overprovisioning.factor", 1.0, "Advanced",
            "Factor the CPU capacity of hosts is multiplied by when placing instances.",
            scope="zone", range=(1.0, 100.0)),
    Setting("mem.overprovisioning.factor", 1.0, "Advanced",
            "Factor the memory capacity of hosts is multiplied by when placing instances.",
            scope="zone", range=(1.0, 100.0)),
    Setting("vm.allocation.algorithm", "firstfit", "Advanced",
            "How hosts are chosen for new instances: firstfit (the first host with room, "
            "in host order), fillfirst (pack: the fullest host that still has room) or "
            "disperse (spread: the emptiest host).", scope="zone",
            choices=("firstfit", "fillfirst", "disperse")),
    Setting("router.reconcile.interval", 2, "Advanced",
            "Seconds between the checks that compare each router's applied document with "
            "the database and re-push drift.", range=(1, 3600)),
    Setting("router.heartbeat.interval", 2.0, "Advanced",
            "Seconds between the signed heartbeats a router's agent sends (given to routers "
            "when they start; 0: none). A router heard from within 3 intervals is not "
            "polled; one whose heartbeats stop is polled before it counts as silent.",
            range=(0.0, 3600.0)),
    Setting("router.check.failures", 2, "Advanced",
            "Missed checks in a row after which a router is declared dead and recreated.",
            range=(1, 100)),
    Setting("router.recreate.max.fraction", 0.5, "Advanced",
            "Circuit breaker: when more than this fraction of a zone's routers go silent at "
            "once, none is recreated automatically (the likely cause is the network or the "
            "management server, not the routers) and an alert is raised.",
            range=(0.0, 1.0)),
    Setting("system.vm.image", "", "Advanced",
            "The system-VM root file system archive (its absolute path on the hosts, e.g. "
            "build/out/skiff-systemvm-rootfs.tar.zst from make image) that namespace hosts "
            "start the zone's routers from: the image's own Python and daemons. Empty: the "
            "hosts' own environment. Routers started after a change use it.", scope="zone"),
    Setting("vm.vnc.enabled", True, "Console Proxy",
            "Whether instances get a VNC display on their host when they start (in the lab: "
            "Xvfb and x11vnc on the host's control address), which createConsoleEndpoint "
            "opens through the zone's console proxy."),
    Setting("consoleproxy.session.timeout", 300, "Console Proxy",
            "Seconds a console session may stay idle (no bytes either way) before the "
            "console proxy closes it.", range=(1, 86400)),
    Setting("consoleproxy.token.ttl", 120, "Console Proxy",
            "Seconds a createConsoleEndpoint URL may be opened in (its token is good for "
            "one session).", range=(5, 3600)),
    Setting("remote.access.vpn.client.iprange", "10.1.2.1-10.1.2.8", "Network",
            "Addresses remote access VPN clients get.", scope="account"),
    Setting("remote.access.vpn.user.limit", 8, "Network",
            "VPN users one account may have.", scope="account", range=(0, 4096)),
    Setting("site2site.vpn.vpngateway.connection.limit", 4, "Network",
            "Site-to-site VPN connections one VPN gateway may have.", range=(1, 256)),
    Setting("site2site.vpn.customergateway.subnets.limit", 10, "Network",
            "CIDRs one VPN customer gateway may list.", range=(1, 64)),
    Setting("use.system.public.ips", True, "Advanced",
            "Whether accounts may use the zone's public IPs not dedicated to them.",
            scope="zone"),
    Setting("secstorage.allowed.internal.sites", "", "Advanced",
            "Comma-separated CIDRs whose addresses template and ISO URLs may name although "
            "they are loopback, link-local, unspecified or multicast (refused otherwise). "
            "Host names are not resolved: the storage appliance fetches what they name."),
    Setting("extract.url.expiration.interval", 14400, "Advanced",
            "Seconds an extractTemplate / extractIso URL stays valid.", range=(60, 604800)),
    Setting("upload.operation.timeout", 60, "Advanced",
            "Minutes a getUploadParamsForTemplate / getUploadParamsForIso signature stays "
            "valid; a template not uploaded by then is UploadAbandoned.", range=(1, 10080)),
    Setting("max.template.iso.size", 50, "Advanced",
            "Largest template or ISO a browser may upload, in GB.", range=(1, 100000)),
    Setting("template.status.interval", 2.0, "Advanced",
            "Seconds between the reads of each zone's storage appliance while a template "
            "or ISO there is pending, arriving or being deleted.", range=(0.1, 3600.0)),
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
        return int(text.strip())
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


#: Most specific first: an account's value wins over its domain's, then the zone's.
SCOPE_ORDER = ("account", "domain", "zone")


async def get_setting(
    session: AsyncSession, name: str, scope: Mapping[str, int | None] | None = None
) -> Value:
    """The setting's typed value: the one stored for the most specific of ``scope``
    (e.g. ``{"account": 7, "domain": 2}``, internal ids) that has one, else the global
    stored one, else its default."""
    setting = BY_NAME.get(name)
    for level in SCOPE_ORDER:
        scope_id = (scope or {}).get(level)
        if scope_id is None or setting is None:
            continue
        text = await session.scalar(
            select(ConfigurationValue.value).where(
                ConfigurationValue.name == name,
                ConfigurationValue.scope == level,
                ConfigurationValue.scope_id == scope_id,
                ConfigurationValue.live(),
            )
        )
        if text is not None:
            return parse(setting.type, text)
    row = await session.scalar(
        select(Configuration).where(Configuration.name == name, Configuration.live())
    )
    if row is not None and row.value is not None:
        return parse(row.type, row.value)
    if name in BY_NAME:
        return BY_NAME[name].default
    raise KeyError(f"unknown setting {name!r}")


THROTTLING = ("api.throttling.enabled", "api.throttling.max", "api.throttling.interval")


async def throttling(session: AsyncSession) -> tuple[int, float]:
    """(requests per account per interval, interval in seconds); 0 requests: no limit."""
    enabled = await get_setting(session, "api.throttling.enabled")
    limit = int(await get_setting(session, "api.throttling.max")) if enabled else 0
    return limit, float(await get_setting(session, "api.throttling.interval"))
