"""The contract every appliance service follows (VyOS-style, simpler).

prepare (render, compare with what is in place) -> check (the daemon's own
checker; nothing touched yet) -> commit (atomic swap, reload). The pipeline
calls check on every service before it commits any, and rolls committed
services back to the last good document when a later one fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AgentContext:
    appliance_id: str
    state_dir: Path
    agent_port: int


@dataclass
class Change:
    """What a service would do for a document. ``changed`` False means nothing."""

    service: str
    changed: bool
    summary: str = ""
    data: Any = None


@dataclass
class ServiceState:
    state: str = "idle"  # idle | ok | failed
    last_error: str | None = None
    last_change: str | None = None
    events: list[str] = field(default_factory=list)

    def event(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-20]


class Service(ABC):
    name: str
    #: In a redundant pair, runs only on the primary: the agent calls pause() when
    #: the router becomes BACKUP or FAULT and resume() when it becomes PRIMARY.
    primary_only: bool = False

    def __init__(self, ctx: AgentContext):
        self.ctx = ctx
        self.state = ServiceState()

    @abstractmethod
    async def prepare(self, doc: Any) -> Change:
        """Render the service's configuration for ``doc``; touch nothing."""

    async def check(self, change: Change) -> None:  # noqa: B027 - optional step
        """Run the daemon's checker on the prepared config; raise ApplyError."""

    @abstractmethod
    async def commit(self, change: Change) -> None:
        """Swap the prepared config in and reload; raise ApplyError."""

    async def withdraw(self) -> None:  # noqa: B027 - optional step
        """Undo everything (used when the very first document fails)."""

    async def start(self) -> None:  # noqa: B027 - optional step
        """Called once when the agent starts, before any document is applied."""

    async def stop(self) -> None:  # noqa: B027 - optional step
        """Called when the agent stops."""

    async def pause(self) -> None:  # noqa: B027 - optional step
        """Stop serving (daemon or listener down) but keep the applied configuration;
        applies while paused update the configuration without starting anything."""

    async def resume(self) -> None:  # noqa: B027 - optional step
        """Serve the applied configuration again (the router became primary)."""

    async def live_status(self) -> dict:
        """status() plus what only the running daemon can tell (asked at request time)."""
        return self.status()

    def routes(self) -> list:
        """Extra routes (aiohttp RouteDefs) on the agent's mTLS API, e.g. a role's
        per-item status; the agent adds them when it starts."""
        return []

    def healthy(self) -> bool:
        """False while a daemon that should serve is down (a crash loop, a failed start).
        A primary with an unhealthy primary_only service gives up primary."""
        return True

    def status(self) -> dict:
        return {
            "state": self.state.state,
            "last_error": self.state.last_error,
            "last_change": self.state.last_change,
            "events": list(self.state.events),
        }
