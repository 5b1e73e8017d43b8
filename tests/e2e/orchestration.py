"""A live management server with a zone in a box, for the orchestration tests.

``Cloud`` starts the server (SQLite in a temporary home, or the database ``db``
names), builds the zone through the API with the ``cs`` client
(mgmt.client.zonebox) on a netns host named like a lab, and removes the whole
fabric at the end. Calls go through the real client in a worker thread, as any
CloudStack client would make them.

With ``processes=True`` the server is ``skiff mgmt serve`` in a child process
(``ServerProcess``), and ``add_server`` starts more of them on the same database
(each with its own home, port and reconcile loop), as several management
servers of one cloud run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from cs.client import CloudStack

from appliances.lab.daemons import ENV_MARK
from appliances.lab.lab import Lab
from appliances.lab.netns import run
from mgmt.client.zonebox import Zone, build_zone
from mgmt.server.app import ManagementServer, Settings

REPO = Path(__file__).resolve().parents[2]
#: How long a server process may take to listen, and to exit after SIGTERM.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LISTENING = re.compile(r"listening on (http://\S+/client/api)")


def client(url: str, key: str, secret: str, poll_interval: float = 0.05) -> CloudStack:
    return CloudStack(url, key=key, secret=secret, fetch_result=True,
                      poll_interval=poll_interval, timeout=60, job_timeout=300)


class ServerProcess:
    """``skiff mgmt serve`` in a child process: its own home and port, the database
    ``db`` names. Its log (stderr) goes to ``<home>/server.log``. It carries the lab's
    mark (SKIFF_LAB), so ``skiff lab down --name <lab>`` ends it if a test run could not."""

    def __init__(self, home: Path, db: str, lab: str):
        self.home = home
        self.db = db
        self.lab = lab
        self.url = ""
        self.keys: tuple[str, str] = ("", "")
        self.proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task | None = None

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    async def start(self, keys: tuple[str, str] | None = None) -> ServerProcess:
        """Start and wait until it listens. ``keys``: the admin's (apikey, secretkey);
        by default from the admin.json its own first start wrote."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, ENV_MARK: self.lab, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mgmt.cli", "mgmt", "serve", "--home", str(self.home),
            "--db", self.db, "--port", "0", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
        listening = asyncio.get_running_loop().create_future()
        self._log_task = asyncio.create_task(self._copy_log(listening))
        try:
            self.url = await asyncio.wait_for(listening, START_TIMEOUT)
        except BaseException:
            await self.stop(signal.SIGKILL)
            raise
        if keys is None:
            saved = json.loads((self.home / "admin.json").read_text())
            keys = (saved["apikey"], saved["secretkey"])
        self.keys = keys
        return self

    async def _copy_log(self, listening: asyncio.Future) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log.open("ab") as out:
            async for line in self.proc.stderr:
                out.write(line)
                out.flush()
                found = LISTENING.search(line.decode(errors="replace"))
                if found and not listening.done():
                    listening.set_result(found.group(1))
        if not listening.done():
            listening.set_exception(RuntimeError(
                f"the management server exited before it listened; its log:\n"
                f"{self.log.read_text(errors='replace')[-3000:]}"))

    def api(self, poll_interval: float = 0.05) -> CloudStack:
        """A new client of this server (one per thread: a client is not thread-safe)."""
        return client(self.url, *self.keys, poll_interval=poll_interval)

    async def call(self, command: str, /, **params: Any) -> dict:
        return await asyncio.to_thread(getattr(self.api(), command), **params)

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal it and wait for it to exit (SIGKILL if it does not); its exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log_task is not None:
            await self._log_task
        return self.proc.returncode


class Cloud:
    def __init__(self, lab: str, home: Path, db: str | None = None, processes: bool = False):
        self.lab = lab
        self.home = home
        self.db = db  # None: SQLite in home
        self.processes = processes
        self.server: ManagementServer | None = None  # the in-process server
        self.servers: list[ServerProcess] = []  # the server processes, first one first
        self.api: CloudStack | None = None
        self.zone: Zone | None = None

    async def start(self) -> Cloud:
        await Lab(self.lab).down(quiet=True)
        if self.processes:
            if self.db is None:
                raise ValueError("server processes need a database URL (db=...)")
            first = await ServerProcess(self.home, self.db, self.lab).start()
            self.servers.append(first)
            url, keys = first.url, first.keys
        else:
            self.server = ManagementServer(Settings(home=self.home, port=0, db=self.db))
            await self.server.open()
            [url] = await self.server.listen()
            admin = self.server.admin
            keys = (admin.apikey, admin.secretkey)
        self.api = client(url, *keys)
        self.zone = await asyncio.to_thread(build_zone, self.api, self.lab)
        return self

    async def add_server(self, home: Path) -> ServerProcess:
        """Another server process on the same database (and so the same zone)."""
        if not self.servers:
            raise ValueError("add_server needs Cloud(..., processes=True)")
        server = await ServerProcess(home, self.servers[0].db, self.lab).start(
            self.servers[0].keys)
        self.servers.append(server)
        return server

    async def stop(self) -> None:
        for server in reversed(self.servers):
            await server.stop()
        if self.server is not None:
            await self.server.close()
        await Lab(self.lab).down(quiet=True)

    async def call(self, command: str, /, **params: Any) -> dict:
        return await asyncio.to_thread(getattr(self.api, command), **params)

    async def network(self, name: str = "net1", offering: str | None = None) -> dict:
        """A network of the zone box's isolated offering, or of the offering named."""
        assert self.zone is not None
        offering_id = self.zone.network_offering["id"]
        if offering is not None:
            [found] = (await self.call("listNetworkOfferings", name=offering))["networkoffering"]
            offering_id = found["id"]
        return (await self.call("createNetwork", name=name, displaytext=name,
                                zoneid=self.zone.zone["id"],
                                networkofferingid=offering_id))["network"]

    async def deploy(self, network: dict, name: str) -> dict:
        assert self.zone is not None
        return (await self.call("deployVirtualMachine", zoneid=self.zone.zone["id"],
                                serviceofferingid=self.zone.offering["id"],
                                templateid=self.zone.template["id"],
                                networkids=network["id"], name=name))["virtualmachine"]

    def ns(self, role: str) -> str:
        return f"skf-{self.lab}-{role}"

    async def curl(self, url: str, role: str = "internet", timeout: float = 3) -> str | None:
        """The body a GET from a lab namespace returns, or None if nothing answered."""
        res = await run(["ip", "netns", "exec", self.ns(role), "curl", "-s", "--max-time",
                         str(timeout), url], check=False, timeout=timeout + 5)
        return res.stdout if res.ok else None

    async def lease(self, vm: dict) -> dict[str, str]:
        driver = self.driver()
        return await driver.lease(vm["instancename"])

    def driver(self):
        from mgmt.orchestration.hosts.netns import NetnsHostDriver

        return NetnsHostDriver(self.lab)


@contextlib.asynccontextmanager
async def cloud(lab: str, home: Path, db: str | None = None, processes: bool = False):
    c = Cloud(lab, home, db, processes)
    try:
        yield await c.start()
    finally:
        await c.stop()
