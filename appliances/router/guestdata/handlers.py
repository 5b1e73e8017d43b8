"""HTTP answers of the metadata (port 80) and password (port 8080) servers.

Why the source address alone is not enough: CloudStack's VR answers whoever
sends from an instance's IP. Any guest on the same network can configure that
IP on its own interface (or send from it while the owner is stopped) and so
read another instance's user data, which often carries secrets, or take its
password. Every request here must come from the instance's address *and* its
MAC as the router's neighbour table holds it for that address. The hypervisor
pins each guest port to its MAC (CloudStack's anti-spoofing rules), so a guest
that borrows another's IP still shows up with its own MAC and is refused.

Answers follow CloudStack's VR and cloud-init's CloudStack data source:
``/latest/meta-data/`` lists the names, ``/latest/meta-data/<name>`` and the
short form ``/latest/<name>`` answer one value, ``/latest/user-data`` the
decoded user data; all text/plain. The password server answers the password
for ``DomU_Request: send_my_password`` once, ``saved_password`` when there is
nothing (more) to hand out or to acknowledge an ack, and ``bad_request`` for
anything else.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from appliances.router.guestdata.ledger import PasswordLedger
from appliances.router.guestdata.neighbours import NeighbourLookup
from appliances.router.sections.guest_data import InstanceData

log = logging.getLogger(__name__)

TEXT = "text/plain"
SEND_PASSWORD = "send_my_password"
SAVED_PASSWORD = "saved_password"
BAD_REQUEST = "bad_request"
REQUEST_HEADER = "DomU_Request"


@dataclass(frozen=True)
class Entry:
    data: InstanceData
    #: The ledger's hash of (instance_id, password), or None without a password.
    password_digest: str | None


@dataclass(frozen=True)
class GuestTable:
    """What the servers answer, swapped whole when a document is applied."""

    guest_if: str | None = None
    by_ip: dict[str, Entry] = field(default_factory=dict)


def metadata(entry: InstanceData) -> dict[str, str]:
    """Every metadata name of ``entry`` with its value, in listing order."""
    values = {
        "instance-id": entry.instance_id,
        "vm-id": entry.vm_id,
        "local-hostname": entry.local_hostname,
        "local-ipv4": entry.ip,
        "service-offering": entry.service_offering,
        "availability-zone": entry.availability_zone,
    }
    if entry.public_ipv4:
        values["public-ipv4"] = entry.public_ipv4
        values["public-hostname"] = entry.public_ipv4  # CloudStack serves the IP here too
    if entry.public_keys:
        values["public-keys"] = "\n".join(entry.public_keys)
    return values


def user_data(entry: InstanceData) -> bytes:
    return base64.b64decode("".join(entry.user_data.split()))


@dataclass
class Counters:
    served: int = 0
    refused: int = 0
    bad_requests: int = 0
    passwords_handed_out: int = 0


class GuestDataServer:
    """The two aiohttp applications; they read ``self.table`` on every request, so
    a new table takes effect at once without touching the listeners."""

    def __init__(
        self,
        ledger: PasswordLedger,
        neighbours: NeighbourLookup,
        on_event: Callable[[str], None] | None = None,
    ):
        self.ledger = ledger
        self.neighbours = neighbours
        self.table = GuestTable()
        self.counters = Counters()
        self._event = on_event or (lambda text: None)

    # -- who is asking -------------------------------------------------------------------

    def owner(self, request: web.Request) -> Entry | None:
        """The entry whose IP and MAC the request comes from, or None."""
        table = self.table
        ip = request.remote
        entry = table.by_ip.get(ip or "")
        if entry is None or table.guest_if is None:
            return None
        mac = self.neighbours.mac_of(entry.data.ip, table.guest_if)
        if mac != entry.data.mac:
            log.warning(
                "refused %s: neighbour MAC %s is not the instance's %s", ip, mac, entry.data.mac
            )
            return None
        return entry

    def _refuse(self, request: web.Request, body: str = "forbidden\n") -> web.Response:
        self.counters.refused += 1
        log.info("refused %s %s from %s", request.method, request.path, request.remote)
        return web.Response(status=403, text=body, content_type=TEXT)

    def _ok(self, body: str | bytes) -> web.Response:
        self.counters.served += 1
        if isinstance(body, bytes):
            return web.Response(body=body, content_type=TEXT)
        return web.Response(text=body, content_type=TEXT)

    def _bad(self, status: int, body: str) -> web.Response:
        self.counters.bad_requests += 1
        return web.Response(status=status, text=body, content_type=TEXT)

    # -- port 80 -------------------------------------------------------------------------

    def metadata_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle_metadata)
        return app

    async def handle_metadata(self, request: web.Request) -> web.Response:
        entry = self.owner(request)
        if entry is None:
            return self._refuse(request)
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] != "latest":
            return self._bad(404, "not found\n")
        values = metadata(entry.data)
        rest = parts[1:]
        if rest in (["user-data"], ["userdata"]):
            return self._ok(user_data(entry.data))
        if rest == ["meta-data"]:
            return self._ok("\n".join(values))
        if len(rest) == 2 and rest[0] == "meta-data" and rest[1] in values:
            return self._ok(values[rest[1]])
        if len(rest) == 1 and rest[0] in values:
            return self._ok(values[rest[0]])
        return self._bad(404, "not found\n")

    # -- port 8080 -----------------------------------------------------------------------

    def password_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle_password)
        return app

    async def handle_password(self, request: web.Request) -> web.Response:
        entry = self.owner(request)
        if entry is None:
            return self._refuse(request, BAD_REQUEST)
        kind = request.headers.get(REQUEST_HEADER)
        data, digest = entry.data, entry.password_digest
        pending = digest is not None and not self.ledger.handed_out(digest)
        if kind == SEND_PASSWORD:
            if not pending:
                return self._ok(SAVED_PASSWORD)
            assert digest is not None and data.password is not None
            self.ledger.record(digest)  # durable before the guest sees it
            self.counters.passwords_handed_out += 1
            self._event(f"password handed out to {data.instance_id} ({data.ip})")
            log.info("password handed out to %s (%s)", data.instance_id, data.ip)
            return self._ok(data.password)
        if kind == SAVED_PASSWORD:
            if pending:
                assert digest is not None
                self.ledger.record(digest)
            return self._ok(SAVED_PASSWORD)
        return self._bad(400, BAD_REQUEST)

    def pending_passwords(self) -> int:
        return sum(
            1
            for e in self.table.by_ip.values()
            if e.password_digest is not None and not self.ledger.handed_out(e.password_digest)
        )
