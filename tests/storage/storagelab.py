"""A small lab for the storage appliance: the real agent in a namespace, a web server in
another, the test process on the control link.

    skf-<lab>-web   203.0.113.1/24  (fileserver.py on :8000, curl as the "browser")
          | veth
    skf-<lab>-ssvm  203.0.113.20/24 (public: uploads and extracts on :8080)
                    169.254.N.2/24  (control: the agent's mTLS API on :8443)
          | veth skf-<lab>-sc (root namespace, 169.254.N.1/24)
    the test process

Everything carries the lab's prefix, so ``skiff lab down --name <lab>`` (or the
stale-lab cleanup of the next test run) removes it if this process dies.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from appliances.lab import daemons, netns, topology
from appliances.lab.agentclient import AgentClient
from appliances.lab.lab import Lab
from appliances.lab.pki import PkiPaths, create_lab_pki
from appliances.lab.testing import claimed, cleanup_stale_test_labs, new_lab_name

REPO = Path(__file__).resolve().parents[2]
WEB_IP = "203.0.113.1"
SSVM_IP = "203.0.113.20"
WEB_PORT = 8000
PUBLIC_PORT = 8080
AGENT_PORT = 8443


@dataclass
class StorageLab:
    name: str
    dir: Path
    control_ip: str
    pki: PkiPaths
    agent: AgentClient
    agent_pid: int

    @property
    def web_ns(self) -> str:
        return f"skf-{self.name}-web"

    @property
    def ssvm_ns(self) -> str:
        return f"skf-{self.name}-ssvm"

    @property
    def www(self) -> Path:
        return self.dir / "www"

    @property
    def store(self) -> Path:
        return self.dir / "store"

    @property
    def appliance_id(self) -> str:
        return f"s-{self.name}"

    def web_url(self, name: str) -> str:
        return f"http://{WEB_IP}:{WEB_PORT}/{name}"

    @property
    def public_url(self) -> str:
        return f"http://{SSVM_IP}:{PUBLIC_PORT}"

    def log(self, what: str) -> Path:
        return self.dir / "logs" / f"{what}.log"

    async def curl(self, *args: str) -> netns.Result:
        """curl in the web namespace (the browser's side)."""
        return await netns.run_in(self.web_ns, ["curl", "-sS", *args], check=False, timeout=60)


@contextlib.asynccontextmanager
async def storage_lab() -> AsyncIterator[StorageLab]:
    name = new_lab_name()
    with claimed(name):
        await cleanup_stale_test_labs()
        work = Path(tempfile.mkdtemp(prefix=f"skiff-storage-{name}-"))
        try:
            yield await _build(name, work)
        except BaseException as exc:
            saved = Path(tempfile.mkdtemp(prefix=f"skiff-storage-logs-{name}-"))
            shutil.copytree(work / "logs", saved, dirs_exist_ok=True)
            exc.add_note(f"storage lab {name} logs kept in {saved}")
            raise
        finally:
            await Lab(name, work / "no-lab-state").down(quiet=True)
            shutil.rmtree(work, ignore_errors=True)


async def _build(name: str, work: Path) -> StorageLab:
    web, ssvm = f"skf-{name}-web", f"skf-{name}-ssvm"
    for ns in (web, ssvm):
        await netns.add_namespace(ns)
    await netns.add_veth("eth0", ssvm, "eth0", web)
    await netns.add_address("eth0", f"{SSVM_IP}/24", ssvm)
    await netns.add_address("eth0", f"{WEB_IP}/24", web)
    await netns.set_up("eth0", ssvm)
    await netns.set_up("eth0", web)
    async with topology.allocation_lock():
        octet = await topology.choose_control_octet(name)
        root_if = f"skf-{name}-sc"
        await netns.add_veth(root_if, None, "eth1", ssvm)
        await netns.add_address(root_if, f"169.254.{octet}.1/24")
        await netns.set_up(root_if)
    control_ip = f"169.254.{octet}.2"
    await netns.add_address("eth1", f"{control_ip}/24", ssvm)
    await netns.set_up("eth1", ssvm)

    (work / "www").mkdir()
    (work / "logs").mkdir()
    appliance_id = f"s-{name}"
    pki = create_lab_pki(work / "pki", appliance_id, control_ip)
    daemons.spawn(
        name,
        web,
        [
            sys.executable,
            str(REPO / "tests/storage/fileserver.py"),
            "--dir",
            str(work / "www"),
            "--listen",
            WEB_IP,
            "--port",
            str(WEB_PORT),
        ],
        work / "logs" / "web.log",
    )
    pid = daemons.spawn(
        name,
        ssvm,
        [
            sys.executable,
            "-m",
            "mgmt.cli",
            "agent",
            "--role",
            "storage",
            "--id",
            appliance_id,
            "--state-dir",
            str(work / "agent"),
            "--listen",
            control_ip,
            "--port",
            str(AGENT_PORT),
            "--ca",
            str(pki.ca_cert),
            "--cert",
            str(pki.server_cert),
            "--key",
            str(pki.server_key),
        ],
        work / "logs" / "agent.log",
    )
    agent = AgentClient(f"https://{control_ip}:{AGENT_PORT}", appliance_id, pki)
    await agent.wait_healthy(60, alive=lambda: daemons.exited(pid) is None)
    return StorageLab(name, work, control_ip, pki, agent, pid)
