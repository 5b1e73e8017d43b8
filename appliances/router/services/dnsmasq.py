"""DHCP and DNS for the guest network with dnsmasq, on the guest side only.

Hosts, options, names and upstream servers are separate files that dnsmasq
re-reads on SIGHUP, so adding or removing guests never restarts it; only a
change of the main file (interface, range, domain) does. Every file is written
atomically, checked with ``dnsmasq --test`` first (host and option lines are
inlined into the check so each is parsed), and a reload counts as done only
when dnsmasq says it has read the files again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from dataclasses import dataclass

from appliances.agent.service import Change, Service
from appliances.agent.supervisor import Supervisor
from appliances.common.diff import same_items
from appliances.common.errors import ApplyError
from appliances.common.files import atomic_write, read_text
from appliances.common.proc import run
from appliances.common.render import make_environment
from appliances.router.document import RouterDocument
from appliances.router.verify import ROUTER_HOSTNAME

log = logging.getLogger(__name__)

DNSMASQ = "dnsmasq"
DHCP_RELEASE = "dhcp_release"
MAIN = "dnsmasq.conf"
RELOADED = ("dhcp-hosts", "dhcp-opts", "hosts", "servers")
RELOAD_TIMEOUT = 5.0
START_TIMEOUT = 5.0

# No ',' or '=' in a value: they separate fields in dnsmasq's lines, so a value that
# carried one could add a field ("web1,ignore"). Templates write separators themselves.
_env = make_environment("appliances.router", safe_chars=r"A-Za-z0-9._:/-")


@dataclass
class _Files:
    contents: dict[str, str]  # file name -> text
    changed: list[str]
    guest_if: str
    hosts: set[tuple[str, str]]  # (mac, ip)
    before: dict[str, str | None]  # what the files held
    doc: RouterDocument


class DnsmasqService(Service):
    name = "dnsmasq"
    #: In a redundant pair only the primary answers DHCP and DNS.
    primary_only = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.dir = ctx.state_dir / "dnsmasq"
        self.daemon = Supervisor(
            "dnsmasq", on_event=self.state.event, pidfile=self.dir / "dnsmasq.pid"
        )
        self._applied: RouterDocument | None = None
        #: Set by pause(): applies then only write the files; resume() starts dnsmasq.
        self.paused = False
        self._lock = asyncio.Lock()

    def _argv(self) -> list[str]:
        return [DNSMASQ, "--keep-in-foreground", f"--conf-file={self.dir / MAIN}"]

    async def prepare(self, doc: RouterDocument) -> Change:
        prev = self._applied
        serving = self.daemon.running or self.paused
        if prev is not None and serving and not _affects_dnsmasq(prev, doc):
            return Change(self.name, False, "unchanged")
        contents = render(doc, str(self.dir))
        before = {name: read_text(self.dir / name) for name in contents}
        changed = [name for name, text in contents.items() if before[name] != text]
        guest = doc.interface("guest")
        files = _Files(
            contents, changed, guest.name, {(h.mac, h.ip) for h in doc.dhcp_hosts}, before, doc
        )
        needs_start = not serving
        if not changed and not needs_start:
            self._applied = doc
            return Change(self.name, False, "unchanged", files)
        action = "restart" if MAIN in changed or needs_start else "reload"
        return Change(self.name, True, f"{action}: {', '.join(changed) or 'not running'}", files)

    async def check(self, change: Change) -> None:
        files: _Files = change.data
        path = self.dir / "check.conf"
        # Lines that were in the files dnsmasq already accepted need no second check.
        known = None if MAIN in files.changed else files.before
        atomic_write(path, check_config(files.contents, known))
        result = await run([DNSMASQ, "--test", f"--conf-file={path}"])
        if not result.ok:
            raise ApplyError(self.name, "dnsmasq --test refused the configuration", result.output)

    async def commit(self, change: Change) -> None:
        async with self._lock:
            await self._commit(change)

    async def _commit(self, change: Change) -> None:
        files: _Files = change.data
        self._applied = None  # until this succeeds, compare with the files on disk
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # dnsmasq drops to nobody and re-reads these on SIGHUP
        for name in files.changed:
            atomic_write(self.dir / name, files.contents[name])
        if self.paused:
            self._applied = files.doc  # resume() starts dnsmasq with these files
            return
        if MAIN in files.changed or not self.daemon.running:
            await self._restart()
        else:
            await self._reload()
        await self._release_removed(files)
        self._applied = files.doc

    async def withdraw(self) -> None:
        async with self._lock:
            await self.daemon.stop()
            self._applied = None

    async def pause(self) -> None:
        async with self._lock:
            if not self.paused:
                self.paused = True
                self.state.event("paused (not the primary)")
            await self.daemon.stop()

    async def resume(self) -> None:
        async with self._lock:
            if self.paused:
                self.paused = False
                self.state.event("resumed (primary)")
            if self._applied is not None and not self.daemon.running:
                await self._restart()

    def healthy(self) -> bool:
        """False while dnsmasq should serve but is not running (crashed, failing to start)."""
        return self.paused or self._applied is None or self.daemon.running

    async def stop(self) -> None:
        await self.daemon.stop()

    async def _restart(self) -> None:
        mark = self.daemon.log_mark
        await self.daemon.restart(self._argv())
        try:
            await self.daemon.wait_for_line(lambda line: "read " in line and "dhcp-opts" in line,
                                            mark, START_TIMEOUT)
        except TimeoutError:
            output = "\n".join(self.daemon.tail(10))
            raise ApplyError(self.name, "dnsmasq did not start", output) from None

    async def _reload(self) -> None:
        mark = self.daemon.log_mark
        self.daemon.signal(signal.SIGHUP)
        opts = str(self.dir / "dhcp-opts")
        try:
            await self.daemon.wait_for_line(lambda line: line.endswith(f"read {opts}"),
                                            mark, RELOAD_TIMEOUT)
        except TimeoutError:
            raise ApplyError(self.name, "dnsmasq did not confirm the reload",
                             "\n".join(self.daemon.tail(10))) from None

    async def _release_removed(self, files: _Files) -> None:
        """Tell dnsmasq to forget leases of hosts that are gone (as a DHCPRELEASE would)."""
        stale = [lease for lease in read_leases(self.dir / "leases") if lease not in files.hosts]
        results = await asyncio.gather(
            *(run([DHCP_RELEASE, files.guest_if, ip, mac]) for mac, ip in stale)
        )
        for (mac, ip), result in zip(stale, results, strict=True):
            if result.ok:
                self.state.event(f"released lease {ip} ({mac})")
            else:
                log.warning("dhcp_release %s %s failed: %s", ip, mac, result.output)

    def status(self) -> dict:
        return {**super().status(), "paused": self.paused, "daemon": self.daemon.status()}


def render(doc: RouterDocument, directory: str) -> dict[str, str]:
    """Every dnsmasq file for ``doc``, by name."""
    gn = doc.guest_network
    lease = str(gn.lease_seconds) if gn.lease_seconds else "infinite"
    guest = doc.interface("guest")
    dns_servers = list(gn.dns_servers) or [gn.gateway]
    network = ipaddress.IPv4Network(gn.cidr)
    routes = [(r.destination, r.gateway) for r in gn.classless_routes]
    common = {"router_id": doc.router_id, "dir": directory, "lease": lease}
    return {
        MAIN: _env.get_template("dnsmasq.conf.j2").render(
            **common,
            guest_if=guest.name,
            domain=gn.domain,
            network=network.network_address,
            netmask=network.netmask,
        ),
        "dhcp-hosts": _env.get_template("dhcp-hosts.j2").render(**common, hosts=doc.dhcp_hosts),
        "dhcp-opts": _env.get_template("dhcp-opts.j2").render(
            gateway=gn.gateway, dns_servers=dns_servers, domain=gn.domain, routes=routes
        ),
        "hosts": _env.get_template("hosts.j2").render(
            gateway=gn.gateway, router_name=ROUTER_HOSTNAME, hosts=doc.dhcp_hosts,
            records=doc.dns_records,
        ),
        "servers": _env.get_template("servers.j2").render(servers=gn.upstream_resolvers),
    }


def check_config(contents: dict[str, str], known: dict[str, str | None] | None = None) -> str:
    """The main file plus host, option and server lines inlined, so --test parses
    each of them. Lines present in ``known`` (files dnsmasq already accepted) are
    left out: with thousands of hosts, only the new lines need checking."""

    def new_lines(name: str) -> list[str]:
        old = set(((known or {}).get(name) or "").splitlines())
        return [line for line in contents[name].splitlines() if line and line not in old]

    lines = [contents[MAIN]]
    lines += [f"dhcp-host={line}" for line in new_lines("dhcp-hosts")]
    lines += [f"dhcp-option={line}" for line in contents["dhcp-opts"].splitlines() if line]
    lines += [line for line in contents["servers"].splitlines() if line]
    return "\n".join(lines) + "\n"


def _affects_dnsmasq(old: RouterDocument, new: RouterDocument) -> bool:
    return not (
        same_items(old.dhcp_hosts, new.dhcp_hosts)
        and same_items(old.dns_records, new.dns_records)
        and old.guest_network == new.guest_network
        and old.interfaces == new.interfaces
        and old.router_id == new.router_id
    )


def read_leases(path) -> list[tuple[str, str]]:
    """(mac, ip) of every lease in a dnsmasq lease file."""
    leases = []
    for line in (read_text(path) or "").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            try:
                leases.append((parts[1].lower(), str(ipaddress.IPv4Address(parts[2]))))
            except ValueError:
                continue
    return leases
