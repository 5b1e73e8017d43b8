"""The management server: database, directory, jobs and the API, put together."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

import mgmt.commands  # noqa: F401  (declares every command)
from mgmt.api.dispatch import Dispatcher, RateLimiter
from mgmt.db.bootstrap import BootstrapResult, bootstrap
from mgmt.db.engine import Database, database_url, open_database
from mgmt.db.settings import throttling
from mgmt.db.tenancy import Caller
from mgmt.jobs.runner import JobRunner
from mgmt.orchestration.orchestrator import Orchestrator
from mgmt.server.directory import DbDirectory
from mgmt.server.events import EventLog
from mgmt.server.heartbeat import HeartbeatSites
from mgmt.server.http import build_app

log = logging.getLogger("skiff.mgmt")


def default_home() -> Path:
    return Path(os.environ.get("SKIFF_HOME") or "var").resolve()


@dataclass
class Settings:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 8080
    db: str | None = None  # None: SQLite in home
    integration_port: int | None = None  # CloudStack's unauthenticated port: off by default
    api_limit: int = 500
    api_interval: float = 1.0
    session_timeout: float = 1800.0
    tls_cert: Path | None = None  # both set: the API (not the integration port) is HTTPS
    tls_key: Path | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The API's server-side TLS context, or None for plain HTTP."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


class ManagementServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.db: Database | None = None
        self.directory: DbDirectory | None = None
        self.jobs: JobRunner | None = None
        self.events: EventLog | None = None
        self.orchestrator: Orchestrator | None = None
        self.admin: BootstrapResult | None = None
        self.limiters: list[RateLimiter] = []  # one per dispatcher; see set_throttling
        self._runners: list[web.AppRunner] = []

    async def open(self) -> None:
        """Database, first-start bootstrap, settings, job recovery (no listening yet)."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = await open_database(database_url(self.settings.home, self.settings.db))
        self.admin = await bootstrap(self.db, self.settings.home)
        async with self.db.sessions() as session:
            self.set_throttling(*await throttling(session))
        self.directory = DbDirectory(self.db, self.settings.session_timeout)
        self.events = EventLog(self.db)
        self.jobs = JobRunner(self.db, self.id, self)
        self.orchestrator = Orchestrator(self.db, self.settings.home, self.id, self.events)
        self.orchestrator.heartbeats = HeartbeatSites(self.orchestrator)
        await self.orchestrator.start()
        resumed, failed = await self.jobs.recover(self.directory)
        if resumed or failed:
            log.info("jobs left by a stopped server: %d resumed, %d failed", resumed, failed)
        self.jobs.start(self.directory)

    def set_throttling(self, limit: int, interval: float) -> None:
        """The API rate limit, now (updateConfiguration calls this; 0: no limit)."""
        self.settings.api_limit, self.settings.api_interval = limit, interval
        for limiter in self.limiters:
            limiter.limit, limiter.interval = limit, interval

    def dispatcher(self, trusted_caller: Caller | None = None) -> Dispatcher:
        limiter = RateLimiter(self.settings.api_limit, self.settings.api_interval)
        self.limiters.append(limiter)
        return Dispatcher(
            self.directory,
            self,
            limiter,
            run_async=self.jobs.submit,
            trusted_caller=trusted_caller,
        )

    async def listen(self) -> list[str]:
        urls = [
            await self._site(
                self.dispatcher(),
                self.settings.host,
                self.settings.port,
                self.settings.ssl_context(),
            )
        ]
        if self.settings.integration_port:
            # CloudStack's unauthenticated port: root admin for anyone who can connect,
            # so loopback only, and only when asked for.
            admin, _secret = await self.directory.by_api_key(self.admin.apikey)
            urls.append(
                await self._site(
                    self.dispatcher(trusted_caller=admin),
                    "127.0.0.1",
                    self.settings.integration_port,
                )
            )
        return urls

    async def _site(
        self, dispatcher: Dispatcher, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> str:
        runner = web.AppRunner(build_app(dispatcher), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        self._runners.append(runner)
        bound = runner.addresses[0] if runner.addresses else (host, port)
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://{bound[0]}:{bound[1]}/client/api"

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self.orchestrator and self.orchestrator.heartbeats:
            await self.orchestrator.heartbeats.close()
        if self.jobs:
            await self.jobs.drain()
        if self.orchestrator:
            await self.orchestrator.close()
        if self.db:
            await self.db.close()


#: How long the event loop may keep the GIL while the database reader thread waits
#: for it to hand back rows. api_load at the default 5 ms: about 1,200 listZones/s,
#: a 500-row page's p99 about 180 ms; at 0.5 ms: about 1,380/s and 125 ms.
GIL_SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """For a long-running server: hand the GIL over sooner, and freeze what start-up
    made, so the cycle collector's full passes do not walk it again and again."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    server = ManagementServer(settings)
    await server.open()
    urls = await server.listen()
    tune_interpreter()
    for url in urls:
        log.info("listening on %s", url)
    log.info(
        "admin credentials: %s (skiff mgmt keys prints the API keys)", server.admin.credentials_file
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
