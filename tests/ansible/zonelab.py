"""A management server for the role tests, and what they give ansible-playbook.

The server is ``skiff mgmt serve`` in a child process (tests/e2e/orchestration.py's
ServerProcess) with SQLite in a temporary home, on a free port; the lab's state
folder ($SKIFF_LAB_DIR) is under the test's temporary folder too, for the server,
the lab CLI and the roles alike. Its SSH key (what skiff_mgmt generates) is made
here with ssh-keygen.

The lab's state folder is a mkdtemp folder made 0755, not under pytest's tmp_path: the
routers' dnsmasq drops to user nobody before it reads its host files there, and
pytest's folders are 0700 (no lease would ever be offered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from appliances.lab.lab import Lab
from appliances.lab.testing import claimed, cleanup_stale_test_labs, new_lab_name
from mgmt.db.engine import database_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from orchestration import ServerProcess, client  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).with_name("hosts_image_zone.yml")


def ssh_key(path: Path) -> tuple[str, Path]:
    """A new ed25519 key pair at path: (public key line, private key path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skiff-mgmt-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip(), path


def stand_in_image(path: Path) -> Path:
    """A small file in the place of a system-VM root file system archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a real image: the role only copies it\n")
    return path


class ZoneLab:
    """A test lab name, its state folder, a server process and the API variables."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.name = new_lab_name()
        self.state = Path(tempfile.mkdtemp(prefix=f"skiff-lab-{self.name}-"))
        self.state.chmod(0o755)
        self.server: ServerProcess | None = None
        self.public_key, self.private_key = ssh_key(tmp / "mgmt-ssh" / "id_ed25519")

    @property
    def env(self) -> dict[str, str]:
        return {
            "SKIFF_LAB_DIR": str(self.state),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
            ),
        }

    async def start(self) -> ZoneLab:
        await cleanup_stale_test_labs()
        os.environ["SKIFF_LAB_DIR"] = str(self.state)  # the server process inherits it
        home = self.tmp / "mgmt"
        self.server = await ServerProcess(home, database_url(home, None), self.name).start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        await Lab(self.name, self.state / self.name).down(quiet=True)
        shutil.rmtree(self.state, ignore_errors=True)

    def api_vars(self) -> dict[str, str]:
        assert self.server is not None
        return {
            "skiff_api_url": self.server.url,
            "skiff_api_key": self.server.keys[0],
            "skiff_api_secret": self.server.keys[1],
            "skiff_ssh_public_key": self.public_key,
            "skiff_ssh_private_key_path": str(self.private_key),
            "skiff_python": sys.executable,
        }

    def api(self):
        assert self.server is not None
        return client(self.server.url, *self.server.keys)

    async def call(self, command: str, /, **params) -> dict:
        return await asyncio.to_thread(getattr(self.api(), command), **params)

    def pinned_keys(self) -> dict[str, str | None]:
        """Host name -> the host key the server pinned (from its SQLite database)."""
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.tmp / "mgmt" / "skiff.db")) as db:
            return dict(db.execute("select name, host_key from hosts where removed is null"))


@contextlib.asynccontextmanager
async def zone_lab(tmp: Path):
    z = ZoneLab(tmp)
    with claimed(z.name):
        try:
            yield await z.start()
        finally:
            await z.stop()


def local_inventory(z: ZoneLab, path: Path) -> Path:
    """This machine as management server and netns host (inventories/single's shape)."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(
        json.dumps(
            {
                "all": {
                    "vars": {"skiff_lab": z.name},
                    "children": {
                        "skiff_mgmt": {"hosts": {"localhost": local}},
                        "skiff_hosts": {"hosts": {"localhost": {}}},
                    },
                }
            },
            indent=2,
        )
    )
    return path
