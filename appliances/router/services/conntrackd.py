"""conntrackd for a redundant pair: connection state follows the primary.

The steps of conntrackd's own primary-backup.sh, run by the agent as argv lists
when keepalived reports a transition (no script, no shell).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from appliances.agent.supervisor import Supervisor
from appliances.common.errors import ApplyError
from appliances.common.proc import run

log = logging.getLogger(__name__)

CONNTRACKD = "conntrackd"

#: On becoming primary: commit the external cache (the peer's connections) into the
#: kernel, flush both caches, resync the internal cache from the kernel, send a bulk
#: update to the peer.
PRIMARY_STEPS = (("-c",), ("-f",), ("-R",), ("-B",))
#: On becoming backup: shorten the kernel's timers for connections this router no
#: longer carries, and ask the new primary for a full resync.
BACKUP_STEPS = (("-t",), ("-n",))
FAULT_STEPS = (("-t",),)


class ConntrackSync:
    def __init__(self, conf: Path, on_event):
        self.conf = conf
        self.daemon = Supervisor(
            "conntrackd", on_event=on_event, pidfile=conf.parent / "conntrackd.agent.pid"
        )
        self.last_action: str | None = None
        self.last_action_at: float | None = None
        self.last_failure: str | None = None

    def argv(self) -> list[str]:
        return [CONNTRACKD, "-C", str(self.conf)]

    async def check(self, candidate: Path) -> None:
        """conntrackd has no checker flag; a client command parses the whole file first
        and only then tries the control socket, so a parse error is told apart from
        'not running'."""
        result = await run([CONNTRACKD, "-C", str(candidate), "-s"], timeout=10)
        if "parsing config file" in result.output or "syntax error" in result.output:
            raise ApplyError("redundancy", "conntrackd refused its configuration", result.output)

    async def start(self) -> None:
        # A lock file left by a killed conntrackd makes the next one refuse to start.
        (self.conf.parent / "conntrackd.lock").unlink(missing_ok=True)
        await self.daemon.restart(self.argv())

    async def stop(self) -> None:
        await self.daemon.stop()
        (self.conf.parent / "conntrackd.lock").unlink(missing_ok=True)

    async def transition(self, state: str) -> None:
        steps = {"PRIMARY": PRIMARY_STEPS, "BACKUP": BACKUP_STEPS, "FAULT": FAULT_STEPS}.get(state)
        if not steps or not self.daemon.running:
            return
        failed = []
        for step in steps:
            result = await run([CONNTRACKD, "-C", str(self.conf), *step], timeout=10)
            if not result.ok:
                failed.append(f"{' '.join(step)}: {result.output[:200]}")
        self.last_action = f"{state.lower()}: {' '.join(s[0] for s in steps)}"
        self.last_action_at = time.time()
        self.last_failure = "; ".join(failed) or None
        if failed:
            log.warning("conntrackd %s steps failed: %s", state, self.last_failure)

    def status(self) -> dict:
        return {
            **self.daemon.status(),
            "last_action": self.last_action,
            "last_action_at": self.last_action_at,
            "last_failure": self.last_failure,
        }
