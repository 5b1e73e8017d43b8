"""What the skiff_mgmt tests share: a deployment's variables under one folder, its
facts, its processes (found by the lab mark), and waiting for its API."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs.client import CloudStack

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
PLAYBOOK = TESTS / "mgmt_only.yml"
INVENTORY = TESTS / "local.yml"
DOWN = "mgmt-down.yml"
#: Generous bounds for waiting on something that normally takes a second or two.
WAIT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployment:
    root: Path
    lab: str
    port: int
    #: Variables every later run of this deployment passes too.
    extra: dict = field(default_factory=dict)

    def vars(self, **extra) -> dict:
        r = self.root
        return {
            "skiff_lab": self.lab,
            "skiff_venv": str(r / "opt" / "venv"),
            "skiff_home": str(r / "home"),
            "skiff_log_dir": str(r / "log"),
            "skiff_config_file": str(r / "etc" / "mgmt.env"),
            "skiff_run_dir": str(r / "run"),
            "skiff_systemd_unit_dir": str(r / "systemd"),
            "skiff_wheel_cache": str(r / "wheels"),
            "skiff_api_port": self.port,
            "skiff_test_facts": str(r / "facts.json"),
            **self.extra,
            **extra,
        }

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "skiff-mgmt.pid"

    @property
    def unit(self) -> Path:
        return self.root / "systemd" / "skiff-mgmt.service"

    def facts(self) -> dict:
        return json.loads((self.root / "facts.json").read_text())

    def api(self) -> CloudStack:
        f = self.facts()
        return CloudStack(f["skiff_api_url"], key=f["skiff_api_key"],
                          secret=f["skiff_api_secret"], verify=f["skiff_api_ca_cert"] or None,
                          timeout=10)

    def pid(self, child: bool = False) -> int | None:
        path = Path(f"{self.pid_file}.child") if child else self.pid_file
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def marked_pids(self) -> list[int]:
        from appliances.lab.daemons import ENV_MARK
        from appliances.lab.netns import pid_alive, pids_with_env

        return [p for p in pids_with_env(ENV_MARK, self.lab) if pid_alive(p)]


def wait_until(predicate, what: str, timeout: float = WAIT_S, interval: float = 0.2):
    """Poll predicate until it returns something truthy (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not ready yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)
