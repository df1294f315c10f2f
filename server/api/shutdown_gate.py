"""The shutdown gate: once the drain window has ended, new inference calls are refused with UNAVAILABLE
while the port is still open.

gRPC core answers a call that reaches a server while its port is closing with CANCELLED, which
clients do not retry. Refusing in the handler first gives every client still sending a retryable
UNAVAILABLE; the port closes once the refusals have stopped for a moment (clients moved to another
replica) or a bound has passed, so only a client that keeps sending to this replica regardless can
still meet the close.
"""

from __future__ import annotations

import asyncio
import time

from server.core.errors import Unavailable

#: what a call that arrives after the drain window gets (UNAVAILABLE: clients retry it elsewhere)
SHUTTING_DOWN = "server is shutting down; retry on another replica"


class ShutdownGate:
    """Open while serving; ``close()`` makes ``refuse()`` the answer to every new Predict/PredictStream."""

    __slots__ = ("_last_refused", "closed")

    def __init__(self) -> None:
        #: read at the top of each inference handler: one attribute check on the hot path
        self.closed = False
        self._last_refused = 0.0

    def close(self) -> None:
        self.closed = True
        self._last_refused = time.monotonic()

    def refuse(self) -> Unavailable:
        """The error for a call that arrived after ``close()`` (raise it); notes when, for ``wait_quiet``."""
        self._last_refused = time.monotonic()
        return Unavailable(SHUTTING_DOWN)

    async def wait_quiet(self, quiet_s: float, at_most_s: float) -> bool:
        """Wait until no call was refused for ``quiet_s`` seconds (True), or ``at_most_s`` seconds have
        passed since this wait began (False: clients are still sending here)."""
        end = time.monotonic() + at_most_s
        while True:
            now = time.monotonic()
            quiet_at = self._last_refused + quiet_s
            if now >= quiet_at:
                return True
            if now >= end:
                return False
            await asyncio.sleep(min(quiet_at, end) - now)
