"""The batcher's waiting requests: one FIFO per priority level and shape key, with live counts.

Kept apart from the batcher so that its invariant is easy to state and test: ``requests`` and
``rows(key)`` always equal what a full scan would find. They are updated on every push and removal
(a batch taking requests, a cancel, an expiry, a close), so forming a batch costs O(batch + levels)
and never scans the queue: under overload a scan per dispatch made dispatch O(n²).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from server.telemetry.calls import CallRecord

Arrays = Mapping[str, np.ndarray]
ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def shape_key(inputs: Arrays) -> ShapeKey:
    """Requests batch together only when everything but the batch dimension agrees."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


@dataclass(slots=True, eq=False)
class Pending:
    """One request waiting for (or running in) a batch; its future is resolved exactly once."""

    inputs: Arrays
    rows: int
    key: ShapeKey
    future: asyncio.Future[dict[str, np.ndarray]]
    deadline: float | None
    enqueued: float
    priority: int
    timer: asyncio.TimerHandle | None = None
    #: in a BatchQueue right now (cleared when a batch takes it, or it is cancelled or expires)
    queued: bool = False
    #: the caller's record when tracing or the access log observe calls (server/telemetry/calls.py)
    record: CallRecord | None = None


class BatchQueue:
    """Waiting requests by priority level (0 first) and shape key, FIFO within each."""

    def __init__(self, levels: int) -> None:
        self._levels: list[dict[ShapeKey, deque[Pending]]] = [{} for _ in range(max(1, levels))]
        #: per shape key, [rows, requests] waiting; a key leaves with its last request
        self._waiting: dict[ShapeKey, list[int]] = {}
        #: requests waiting now
        self.requests = 0

    def __len__(self) -> int:
        return self.requests

    def rows(self, key: ShapeKey) -> int:
        """Rows waiting with this shape key, over all priority levels (O(1))."""
        counts = self._waiting.get(key)
        return counts[0] if counts else 0

    def requests_of(self, key: ShapeKey) -> int:
        """Requests waiting with this shape key, over all priority levels (O(1))."""
        counts = self._waiting.get(key)
        return counts[1] if counts else 0

    def push(self, pending: Pending) -> None:
        level = self._levels[pending.priority]
        fifo = level.get(pending.key)
        if fifo is None:
            fifo = level[pending.key] = deque()
        fifo.append(pending)
        pending.queued = True
        self.requests += 1
        counts = self._waiting.get(pending.key)
        if counts is None:
            counts = self._waiting[pending.key] = [0, 0]
        counts[0] += pending.rows
        counts[1] += 1

    def _unlink(self, pending: Pending) -> None:
        """Account for a request that has just left its FIFO."""
        pending.queued = False
        self.requests -= 1
        counts = self._waiting[pending.key]
        counts[0] -= pending.rows
        counts[1] -= 1
        if not counts[1]:  # no entry per shape ever seen: the dict stays as small as the queue
            del self._waiting[pending.key]

    def remove(self, pending: Pending) -> bool:
        """Take one request out (a cancel or an expiry); False if it is no longer queued."""
        if not pending.queued:
            return False
        level = self._levels[pending.priority]
        fifo = level[pending.key]
        fifo.remove(pending)  # at most max_queue_size entries, compared by identity in C
        if not fifo:
            del level[pending.key]
        self._unlink(pending)
        return True

    def head(self) -> Pending | None:
        """The oldest request of the highest non-empty priority level."""
        for level in self._levels:
            if level:
                return min((fifo[0] for fifo in level.values()), key=lambda p: p.enqueued)
        return None

    def take(self, key: ShapeKey, limit: int, keep: Callable[[Pending], bool]) -> list[Pending]:
        """Requests of ``key``, highest priority first and FIFO within a level, up to ``limit`` rows.

        The first request is taken whatever its size; within a level taking stops at the first request
        that does not fit, and the next level may still fill the rest. ``keep`` sees every request that
        leaves the queue and says whether it joins the batch (False for a cancelled or expired one,
        which it has dealt with), so dead requests never count towards the limit.
        """
        batch: list[Pending] = []
        rows = 0
        for level in self._levels:
            fifo = level.get(key)
            while fifo:
                pending = fifo[0]
                if rows and rows + pending.rows > limit:
                    break
                fifo.popleft()
                self._unlink(pending)
                if keep(pending):
                    batch.append(pending)
                    rows += pending.rows
            if fifo is not None and not fifo:
                del level[key]
            if rows >= limit:
                break
        return batch

    def drain(self) -> Iterator[Pending]:
        """Empty the queue, yielding every request (oldest first within each level and key)."""
        for level in self._levels:
            while level:
                _key, fifo = level.popitem()
                while fifo:
                    pending = fifo.popleft()
                    self._unlink(pending)
                    yield pending
        assert self.requests == 0 and not self._waiting

    def recount(self) -> tuple[int, dict[ShapeKey, int], dict[ShapeKey, int]]:
        """Requests, rows per key and requests per key found by a full scan: what ``requests``,
        ``rows`` and ``requests_of`` must equal."""
        requests = 0
        rows: dict[ShapeKey, int] = {}
        by_key: dict[ShapeKey, int] = {}
        for level in self._levels:
            for key, fifo in level.items():
                requests += len(fifo)
                rows[key] = rows.get(key, 0) + sum(p.rows for p in fifo)
                by_key[key] = by_key.get(key, 0) + len(fifo)
        return requests, rows, by_key

    @property
    def row_counts(self) -> dict[ShapeKey, int]:
        """A copy of the live rows per shape key (compare with :meth:`recount`)."""
        return {key: counts[0] for key, counts in self._waiting.items() if counts[0]}

    @property
    def request_counts(self) -> dict[ShapeKey, int]:
        """A copy of the live requests per shape key (compare with :meth:`recount`)."""
        return {key: counts[1] for key, counts in self._waiting.items()}
