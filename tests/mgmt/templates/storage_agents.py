"""Real storage agents for the template tests, one per zone, on loopback.

Each is ``skiff agent --role storage`` in a process of its own, with a server
certificate from the live server's appliance CA, so the server reaches it over
mutual TLS exactly as it reaches a system VM. :class:`DirectSite` is the
storage site (mgmt.orchestration.storage_images) the test plugs into the server
in place of the system VMs: it finds a zone's agent and pushes the zone's
document built from ``storage_images`` and ``upload_key``, as the system VM's
document builder does.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from appliances.lab.agentclient import AgentClient
from mgmt.orchestration.storage_images import storage_images, transfer_base, upload_key

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StorageAgent:
    appliance_id: str
    dir: Path
    process: asyncio.subprocess.Process
    client: AgentClient
    public_port: int
    generation: int = 0
    pushes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def store(self) -> Path:
        return self.dir / "store"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def stored_files(self) -> list[str]:
        if not self.store.is_dir():
            return []
        return sorted(p.name for p in self.store.iterdir() if p.is_file())

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_agent(orch, work: Path, appliance_id: str) -> StorageAgent:
    """Start a storage agent whose certificate the server's CA issued."""
    work.mkdir(parents=True)
    certs = orch.ca.issue_agent(appliance_id, "127.0.0.1")
    paths = {}
    for name, text in (("ca.pem", certs.ca), ("cert.pem", certs.cert), ("key.pem", certs.key)):
        paths[name] = work / name
        paths[name].write_text(text)
        paths[name].chmod(0o600)
    port = free_port()
    log = (work / "agent.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mgmt.cli",
        "agent",
        "--role",
        "storage",
        "--id",
        appliance_id,
        "--state-dir",
        str(work / "state"),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--ca",
        str(paths["ca.pem"]),
        "--cert",
        str(paths["cert.pem"]),
        "--key",
        str(paths["key.pem"]),
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    log.close()
    client = AgentClient(
        f"https://127.0.0.1:{port}", appliance_id, orch.ca.client_context(), timeout=30
    )
    agent = StorageAgent(appliance_id, work, process, client, free_port())
    try:
        await client.wait_healthy(60, alive=lambda: process.returncode is None)
    except BaseException:
        await agent.stop()
        raise
    return agent


class DirectSite:
    """The server's storage site for the test: zone id -> a StorageAgent."""

    def __init__(self) -> None:
        self.zones: dict[int, StorageAgent] = {}

    async def attach(self, orch, zone_id: int, agent: StorageAgent) -> None:
        """The zone's appliance from now on; it gets its first document at once, as a
        system VM does when it starts."""
        self.zones[zone_id] = agent
        await self.push(orch, zone_id)

    async def agent(self, orch, zone_id: int) -> AgentClient | None:
        found = self.zones.get(zone_id)
        return found.client if found else None

    async def public_url(self, orch, zone_id: int) -> str | None:
        found = self.zones.get(zone_id)
        return await transfer_base(found.client) if found else None

    async def push(self, orch, zone_id: int) -> None:
        agent = self.zones[zone_id]
        async with agent.lock:
            async with orch.db.sessions() as session:
                images = await storage_images(session, zone_id)
            agent.generation += 1
            await agent.client.apply(
                {
                    "appliance_id": agent.appliance_id,
                    "generation": agent.generation,
                    "store": {"path": str(agent.store)},
                    "limits": {"download_retries": 3},
                    "transfer": {
                        "address": "127.0.0.1",
                        "port": agent.public_port,
                        "key": (await upload_key(orch, zone_id)).decode(),
                        "public_url": agent.public_url,
                    },
                    "images": images,
                }
            )
            agent.pushes += 1
