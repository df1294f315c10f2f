"""Cheap per-version counters: requests by outcome, batches, batch sizes, queue and compute time.

Plain integer additions on the event loop thread; read by ModelStatistics and ``inferd stats``.
"""

from __future__ import annotations

from collections import Counter


class VersionStats:
    __slots__ = (
        "batch_sizes",
        "batches",
        "cancelled_before_run",
        "compute_ns",
        "expired_before_run",
        "failed",
        "queue_ns",
        "rows",
        "success",
    )

    def __init__(self) -> None:
        self.success = 0
        self.failed: Counter[str] = Counter()
        self.batches = 0
        self.rows = 0
        #: rows per engine call → number of calls
        self.batch_sizes: Counter[int] = Counter()
        self.queue_ns = 0
        self.compute_ns = 0
        self.expired_before_run = 0
        self.cancelled_before_run = 0

    def record_batch(self, rows: int, compute_ns: int) -> None:
        self.batches += 1
        self.rows += rows
        self.batch_sizes[rows] += 1
        self.compute_ns += compute_ns
