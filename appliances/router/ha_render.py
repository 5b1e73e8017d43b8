"""keepalived.conf and conntrackd.conf of a redundant router pair, rendered from the document."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from appliances.common.render import Escaped, RenderError, make_environment
from appliances.router.document import RouterDocument
from appliances.router.vips import vip_plan

CONNTRACKD_PORT = 3780
#: Seconds between gratuitous ARP refreshes while primary (switches forget MACs).
GARP_REFRESH_S = 60
#: Seconds after becoming primary before the second burst of gratuitous ARPs.
GARP_DELAY_S = 1

# Inside keepalived's double quotes nothing is escaped, '$' starts a parameter and
# a newline ends the line: the section's pattern already excludes them; this is the
# last line of defence.
_QUOTABLE = re.compile(r'[^"\\$\s]*')


def _kq(value: object) -> Escaped:
    text = str(value)
    if not _QUOTABLE.fullmatch(text):
        raise RenderError(f"refusing to quote {text[:40]!r} for keepalived")
    return Escaped(f'"{text}"')


_env = make_environment("appliances.router", safe_chars=r"A-Za-z0-9._:/-", filters={"kq": _kq})


@dataclass(frozen=True)
class HaPaths:
    """Where one router's keepalived and conntrackd keep their files."""

    dir: Path

    @property
    def keepalived_conf(self) -> Path:
        return self.dir / "keepalived.conf"

    @property
    def conntrackd_conf(self) -> Path:
        return self.dir / "conntrackd.conf"

    @property
    def fifo(self) -> Path:
        return self.dir / "notify.fifo"

    @property
    def health(self) -> Path:
        return self.dir / "health"

    @property
    def keepalived_pid(self) -> Path:
        return self.dir / "keepalived.pid"

    @property
    def vrrp_pid(self) -> Path:
        return self.dir / "vrrp.pid"


def own_sync_address(doc: RouterDocument) -> IPv4Interface:
    red = doc.redundancy
    assert red is not None
    return next(a.address for a in red.own_addresses if a.interface == red.sync_interface)


def render_keepalived(doc: RouterDocument, paths: HaPaths) -> str:
    red = doc.redundancy
    if red is None:
        raise ValueError("the document has no redundancy section")
    return _env.get_template("keepalived.conf.j2").render(
        router_id=doc.router_id,
        fifo=paths.fifo,
        health_file=paths.health,
        sync_if=red.sync_interface,
        vrid=red.vrid,
        priority=red.priority,
        advert_int=red.advert_interval_s,
        own_ip=own_sync_address(doc).ip,
        peer_ip=red.peer_ip,
        password=red.password,
        garp_delay=GARP_DELAY_S,
        garp_refresh=GARP_REFRESH_S,
        plan=vip_plan(doc),
    )


def render_conntrackd(doc: RouterDocument, paths: HaPaths) -> str:
    red = doc.redundancy
    if red is None:
        raise ValueError("the document has no redundancy section")
    ignore = ["127.0.0.1", red.peer_ip]
    ignore += [str(a.address.ip) for a in red.own_addresses]
    ignore += [str(a.ip) for i in doc.interfaces if i.role == "control" for a in i.addresses]
    return _env.get_template("conntrackd.conf.j2").render(
        router_id=doc.router_id,
        own_ip=own_sync_address(doc).ip,
        peer_ip=red.peer_ip,
        port=CONNTRACKD_PORT,
        sync_if=red.sync_interface,
        dir=paths.dir,
        ignore=list(dict.fromkeys(ignore)),
    )
