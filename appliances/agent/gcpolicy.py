"""Keeping Python's cycle collector off the apply path.

A router with 10,000 rules keeps hundreds of thousands of small objects alive
(the validated document and the raw JSON it remembers), and every full
collection walks all of them: about 60 ms, landing on a random request; a 3 MB
document also makes some 300,000 new objects, enough to set one off by itself.
So the collector pauses while a document is handled, and after an apply the
live objects are frozen (the collector skips them; reference counting still
frees them). Anything that later becomes cyclic garbage is reclaimed by a full
collection once the agent has been idle for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

IDLE_COLLECT_S = 30.0
RELEASE_DELAY_S = 0.05


class GcPolicy:
    def __init__(self, idle_seconds: float = IDLE_COLLECT_S):
        self.idle_seconds = idle_seconds
        self._timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def paused(self):
        """No automatic collections inside; the caller freezes or not afterwards."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if was_enabled:
                gc.enable()
            self._schedule_idle_collect()

    def after_apply(self, release=None) -> None:
        """``release`` frees what the apply replaced, once the answer has gone out."""
        if release is not None:
            asyncio.get_running_loop().call_later(RELEASE_DELAY_S, release)
        gc.freeze()

    def _schedule_idle_collect(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._collect)

    def _collect(self) -> None:
        self._timer = None
        gc.unfreeze()
        gc.collect()
        gc.freeze()
