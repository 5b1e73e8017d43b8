"""Console sessions and the used-token memory of the proxy."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


class NonceStore:
    """Nonces of tokens already used, each kept until its token expires (after that
    the token is refused as expired anyway, so memory stays bounded by the tokens
    alive at once). In memory: a restarted proxy forgets them, as CloudStack's does."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []

    def claim(self, nonce: str, expires: float, now: float | None = None) -> bool:
        """True the first time ``nonce`` is claimed, False ever after (until expiry)."""
        self.purge(time.time() if now is None else now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires
        heapq.heappush(self._by_expiry, (expires, nonce))
        return True

    def purge(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, nonce = heapq.heappop(self._by_expiry)
            self._seen.pop(nonce, None)

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class Session:
    """One viewer bridged to one VNC server."""

    session_id: str
    instance_id: str
    client: str
    target: str  # host:port, for operators; never the password
    started_mono: float
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    last_activity: float = 0.0
    bytes_to_viewer: int = 0
    bytes_from_viewer: int = 0
    state: str = "connecting"  # connecting | bridging | closing

    def __post_init__(self) -> None:
        self.last_activity = self.started_mono

    def as_status(self, now: float) -> dict:
        return {
            "session_id": self.session_id,
            "instance_id": self.instance_id,
            "started": self.started,
            "client": self.client,
            "target": self.target,
            "state": self.state,
            "duration_s": round(now - self.started_mono, 1),
            "idle_s": round(now - self.last_activity, 1),
            "bytes_to_viewer": self.bytes_to_viewer,
            "bytes_from_viewer": self.bytes_from_viewer,
        }
