"""Metadata, user data and passwords for guests, served by the agent itself.

Two aiohttp listeners on the guest gateway address only (never 0.0.0.0: the
agent runs as root in the router and must not offer this on the public or
control side): port 80 for CloudStack's metadata API, port 8080 for its
password server. What they answer lives in a table that a commit swaps whole,
so adding, changing or removing instances never touches the listeners; only a
new gateway address rebinds them. See appliances/router/guestdata/handlers.py
for why each answer needs the requester's IP *and* MAC.

In a redundant pair this runs on the primary only: pause() closes the
listeners and keeps the table, resume() opens them again.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass

from aiohttp import web

from appliances.agent.service import AgentContext, Change, Service
from appliances.common.errors import ApplyError
from appliances.router.document import RouterDocument
from appliances.router.guestdata.handlers import Entry, GuestDataServer, GuestTable
from appliances.router.guestdata.ledger import PasswordLedger
from appliances.router.guestdata.neighbours import ArpTable, NeighbourLookup
from appliances.router.sections.guest_data import InstanceData

log = logging.getLogger(__name__)

METADATA_PORT = 80
PASSWORD_PORT = 8080
SHUTDOWN_TIMEOUT = 5.0  # for requests in flight when the listeners close
# Bind even when the address is not (yet) on an interface: a redundant pair's
# gateway VIP may arrive a moment after the router becomes primary.
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


@dataclass(frozen=True)
class _Wanted:
    address: str | None  # None: no instances, no listeners
    guest_if: str | None
    entries: list[InstanceData]
    table: GuestTable


class GuestDataService(Service):
    name = "guest_data"
    primary_only = True

    def __init__(
        self,
        ctx: AgentContext,
        *,
        ports: tuple[int, int] = (METADATA_PORT, PASSWORD_PORT),
        neighbours: NeighbourLookup | None = None,
    ):
        super().__init__(ctx)
        self.dir = ctx.state_dir / "guest_data"
        self.ports = ports
        self.ledger = PasswordLedger(self.dir)
        self.server = GuestDataServer(self.ledger, neighbours or ArpTable(), self.state.event)
        self._applied: _Wanted | None = None
        self._runners: list[web.AppRunner] = []
        self._sites: list[tuple[web.SockSite, socket.socket]] = []
        self._bound: str | None = None
        self._paused = False

    # -- the contract --------------------------------------------------------------------

    async def prepare(self, doc: RouterDocument) -> Change:
        address = doc.guest_network.gateway if doc.guest_data else None
        guest = doc.interface("guest")
        guest_if = guest.name if guest is not None else None
        prev = self._applied
        if (
            prev is not None
            and prev.address == address
            and prev.guest_if == guest_if
            and prev.entries == doc.guest_data
            and (self._paused or self._bound == address)
        ):
            return Change(self.name, False, "unchanged")
        table = self._table(doc.guest_data, guest_if)
        wanted = _Wanted(address, guest_if, list(doc.guest_data), table)
        if address is None:
            summary = "no instances: listeners closed"
        elif prev is None or prev.address != address or self._bound != address:
            summary = f"listen on {address}, {len(table.by_ip)} instances"
        else:
            summary = f"{len(table.by_ip)} instances"
        return Change(self.name, True, summary, wanted)

    async def commit(self, change: Change) -> None:
        wanted: _Wanted = change.data
        previous = self.server.table
        self.server.table = wanted.table
        self._applied = wanted
        # Keep the hashes of the replaced table too: a rollback to it must not
        # hand its passwords out again.
        self.ledger.compact(_digests(wanted.table) | _digests(previous))
        if not self._paused:
            await self._listen(wanted.address)

    async def withdraw(self) -> None:
        await self._close()
        self.server.table = GuestTable()
        self._applied = None

    async def stop(self) -> None:
        await self._close()

    async def pause(self) -> None:
        self._paused = True
        await self._close()
        self.state.event("paused: listeners closed")

    async def resume(self) -> None:
        self._paused = False
        if self._applied is not None:
            await self._listen(self._applied.address)
        self.state.event("resumed")

    def status(self) -> dict:
        c = self.server.counters
        return {
            **super().status(),
            "paused": self._paused,
            "listening": self.listening(),
            "entries": len(self.server.table.by_ip),
            "requests_served": c.served,
            "requests_refused": c.refused,
            "bad_requests": c.bad_requests,
            "passwords_handed_out": c.passwords_handed_out,
            "passwords_pending": self.server.pending_passwords(),
        }

    def listening(self) -> list[str]:
        """host:port of every open listener."""
        found = []
        for _site, sock in self._sites:
            host, port = sock.getsockname()[:2]
            found.append(f"{host}:{port}")
        return found

    # -- internals -----------------------------------------------------------------------

    def _table(self, entries: list[InstanceData], guest_if: str | None) -> GuestTable:
        """The lookup table; entries that did not change keep their password hash."""
        known = {id(e.data): e for e in self.server.table.by_ip.values()}
        by_ip = {}
        for data in entries:
            entry = known.get(id(data))
            if entry is None or entry.data is not data:
                digest = (
                    self.ledger.digest(data.instance_id, data.password)
                    if data.password is not None
                    else None
                )
                entry = Entry(data, digest)
            by_ip[data.ip] = entry
        return GuestTable(guest_if, by_ip)

    async def _listen(self, address: str | None) -> None:
        if self._bound == address and (address is None or self._sites):
            return
        await self._close()
        if address is None:
            return
        for app in (self.server.metadata_app(), self.server.password_app()):
            runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
            )
            await runner.setup()
            self._runners.append(runner)
        try:
            for runner, port in zip(self._runners, self.ports, strict=True):
                sock = _listening_socket(address, port)
                site = web.SockSite(runner, sock)
                self._sites.append((site, sock))
                await site.start()
        except OSError as exc:
            await self._close()
            raise ApplyError(self.name, f"cannot listen on {address}: {exc}") from None
        self._bound = address
        self.state.event(f"listening on {', '.join(self.listening())}")
        log.info("guest data listening on %s", ", ".join(self.listening()))

    async def _close(self) -> None:
        """Close the listeners and the connections they accepted (a keep-alive
        connection must not go on being served by a paused backup)."""
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        for _site, sock in self._sites:
            sock.close()
        if self._sites:
            self.state.event("listeners closed")
        self._runners, self._sites = [], []
        self._bound = None


def _digests(table: GuestTable) -> set[str]:
    return {e.password_digest for e in table.by_ip.values() if e.password_digest}


def _listening_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
