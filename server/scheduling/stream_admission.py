"""Admission of PredictStream sessions: a bounded number generate at once, a bounded FIFO waits.

``max_active_streams`` streams hold a place at once; up to ``max_waiting_streams`` more wait in FIFO
order for one; beyond that PredictStream answers RESOURCE_EXHAUSTED at once. A freed place passes
straight to the oldest waiter, so a stream that waited is never overtaken by one that arrived later.
Closing (the version unloads) ends every waiter with UNAVAILABLE and refuses newcomers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from server.core.deadlines import expired
from server.core.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from server.scheduling.settings import StreamingSpec
from server.telemetry.stats import StreamCounters


class Admission:
    """Active places plus a bounded FIFO of waiters; keeps the active and waiting gauges current."""

    def __init__(self, model: str, spec: StreamingSpec, counters: StreamCounters) -> None:
        self.model = model
        self.spec = spec
        self.counters = counters
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _gauges(self) -> None:
        self.counters.active_streams = self.active
        self.counters.waiting_streams = len(self._waiting)

    def _unloading(self) -> Unavailable:
        return Unavailable(f"model '{self.model}' is unloading")

    async def enter(self, deadline: float | None) -> None:
        """Take a place, waiting for one if the queue has room; RESOURCE_EXHAUSTED otherwise.

        A waiter whose deadline passes gets DEADLINE_EXCEEDED; one cancelled is counted as cancelled
        (or expired, when gRPC cancelled it at its deadline); either way its place in line is given up.
        """
        if self.closed:
            raise self._unloading()
        if self.active < self.spec.max_active and not self._waiting:
            self.active += 1
            self._gauges()
            return
        if len(self._waiting) >= self.spec.max_waiting:
            self.counters.streams_rejected += 1
            raise ResourceExhausted(
                f"model '{self.model}' has {self.active} active streams and {len(self._waiting)} waiting "
                f"(max_active_streams {self.spec.max_active}, max_waiting_streams {self.spec.max_waiting}); "
                "retry later"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._gauges()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.leave()  # the place arrived as we gave up: pass it on
            elif not future.done():
                future.cancel()
                self._waiting.remove(future)
                self._gauges()
            if isinstance(exc, asyncio.TimeoutError):
                self.counters.streams_expired += 1
                raise DeadlineExceeded(
                    f"deadline expired while waiting for a stream place on model '{self.model}'"
                ) from None
            if isinstance(exc, asyncio.CancelledError):
                self.count_cancel(deadline)
            raise

    def count_cancel(self, deadline: float | None) -> None:
        """A reader went away: cancelled, or expired if gRPC ended the call at its deadline."""
        if expired(deadline):
            self.counters.streams_expired += 1
        else:
            self.counters.streams_cancelled += 1

    def leave(self) -> None:
        """Give a place back: to the oldest waiter still waiting, else to the pool."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                self._gauges()
                return
        self.active -= 1
        self._gauges()

    def close(self) -> None:
        """Refuse newcomers; every waiter ends UNAVAILABLE (the version is unloading)."""
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._unloading())
        self._gauges()
