"""From an HTTP request to a command's answer: parse, authenticate, limit, convert, run.

Authentication is by signature (apiKey + signature, with ``expires`` when
signatureVersion is 3) or by a login session (sessionkey). Who a key or
session belongs to comes from a :class:`Directory`, which the server backs
with its database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from mgmt.api import envelope, signing
from mgmt.api.errors import ApiError, internal, unauthorized, unsupported
from mgmt.api.params import Params
from mgmt.api.registry import ADMIN, DOMAIN_ADMIN, REGISTRY, USER, Command

log = logging.getLogger(__name__)

#: CloudStack account types -> the role names commands are declared with.
ROLE_OF_ACCOUNT_TYPE = {1: ADMIN, 2: DOMAIN_ADMIN, 0: USER}
UNKNOWN_COMMAND = "The given command does not exist or it is not available for user"


class CallerLike(Protocol):
    user_id: int
    account_id: int
    account_type: int
    domain_id: int
    domain_path: str


class Directory(Protocol):
    """Who is calling: the server's user store."""

    async def by_api_key(self, api_key: str) -> tuple[CallerLike, str] | None:
        """(caller, secret key) of the user owning ``api_key``, if enabled."""

    async def by_session(self, session_key: str) -> CallerLike | None:
        """The caller of a live login session."""


@dataclass
class Call:
    """What a command handler gets besides its converted arguments."""

    command: Command
    caller: CallerLike | None
    params: Params
    server: Any  # the management server (database, jobs, settings)
    request: Any = None  # the aiohttp request (login sets a cookie on the answer)
    cookies: dict[str, str] | None = None

    @property
    def role(self) -> str | None:
        return ROLE_OF_ACCOUNT_TYPE.get(self.caller.account_type) if self.caller else None


class RateLimiter:
    """At most ``limit`` requests per account per ``interval`` seconds (fixed windows)."""

    def __init__(self, limit: int, interval: float):
        self.limit, self.interval = limit, interval
        self._windows: dict[int, tuple[float, int]] = {}

    def check(self, account_id: int) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic()
        start, count = self._windows.get(account_id, (now, 0))
        if now - start >= self.interval:
            start, count = now, 0
        if count >= self.limit:
            wait = max(self.interval - (now - start), 0.0)
            raise ApiError(
                429,
                f"There are too many API calls for this account ({self.limit} per "
                f"{self.interval:g} s); try again in {wait:.1f} s",
            )
        self._windows[account_id] = (start, count + 1)


Runner = Callable[[Call, dict[str, Any]], Awaitable[envelope.Result]]


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    cookies: dict[str, str] | None = None


class Dispatcher:
    def __init__(
        self,
        directory: Directory,
        server: Any,
        limiter: RateLimiter,
        run_async: Runner | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trusted_caller: CallerLike | None = None,
    ):
        # trusted_caller: CloudStack's integration port, where every call runs as the
        # root admin without a signature. The server binds it to loopback only.
        self.trusted_caller = trusted_caller
        self.directory = directory
        self.server = server
        self.limiter = limiter
        self.run_async = run_async
        self.clock = clock

    async def handle(self, pairs, session_cookie: str | None = None) -> Answer:
        params = Params(pairs)
        fmt = "json" if (params.get("response") or "").lower() == "json" else "xml"
        name = params.get("command") or ""
        cmd = REGISTRY.get(name.lower())
        try:
            if cmd is None:
                raise unsupported(UNKNOWN_COMMAND if name else "missing parameter command")
            caller = await self._authenticate(cmd, params, session_cookie)
            call = Call(cmd, caller, params, self.server)
            if caller is not None:
                if call.role not in cmd.roles:
                    raise unsupported(UNKNOWN_COMMAND)
                self.limiter.check(caller.account_id)
            args = cmd.convert(params)
            if cmd.is_async and self.run_async is not None:
                result = await self.run_async(call, args)
            else:
                result = await cmd.handler(call, args)
            body, ctype = envelope.render(cmd.name, envelope.body_of(result), fmt)
            return Answer(200, body, ctype, call.cookies)
        except ApiError as exc:
            return self._error(name or "api", exc, fmt)
        except Exception:
            log.exception("command %s failed", name)
            return self._error(name or "api", internal("internal error; see the server log"), fmt)

    def _error(self, name: str, exc: ApiError, fmt: str) -> Answer:
        body, ctype = envelope.render(name, envelope.error_body(name, exc), fmt)
        return Answer(exc.code, body, ctype)

    async def _authenticate(
        self, cmd: Command, params: Params, session_cookie: str | None
    ) -> CallerLike | None:
        if self.trusted_caller is not None:
            return self.trusted_caller
        api_key, signature = params.get("apiKey"), params.get("signature")
        if api_key and signature:
            found = await self.directory.by_api_key(api_key)
            if found is None:
                raise unauthorized()
            caller, secret = found
            if not signing.verify(params.for_signing(), secret, signature):
                raise unauthorized()
            if params.get("signatureVersion") == "3":
                self._check_expires(params.get("expires"))
            return caller
        session_key = params.get("sessionkey") or session_cookie
        if session_key:
            caller = await self.directory.by_session(session_key)
            if caller is None:
                raise unauthorized("the session has expired or was never opened; log in again")
            return caller
        if not cmd.authenticated:
            return None
        raise unauthorized()

    def _check_expires(self, expires: str | None) -> None:
        if not expires:
            raise unauthorized("signatureVersion 3 needs the parameter expires")
        try:
            when = signing.parse_expires(expires)
        except ValueError as exc:
            raise unauthorized(str(exc)) from None
        if when < self.clock():
            raise unauthorized(f"the request expired at {expires}; sign a new one")
