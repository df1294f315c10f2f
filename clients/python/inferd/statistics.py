"""Reading ModelStatistics replies (``Client.statistics``): latency quantiles from a version's histogram.

for stats in client.statistics("mlp_ranker"):
    p99_us = latency_quantile(stats.latency_buckets, 0.99)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

__all__ = ["WORKERS_HEADER", "latency_quantile"]

#: trailing metadata of a statistics reply from ``inferd serve --workers``: "<answered>/<total>" workers
WORKERS_HEADER = "x-inferd-workers"


class LatencyBucket(Protocol):
    """What ``VersionStatistics.latency_buckets`` holds: successful calls with latency up to the bound."""

    @property
    def le_microseconds(self) -> float: ...

    @property
    def count(self) -> int: ...


def latency_quantile(buckets: Iterable[LatencyBucket], q: float) -> float:
    """The upper bound (µs) of the bucket holding quantile ``q`` (0 < q ≤ 1): an honest over-estimate,
    never interpolated; ``inf`` when it falls in the last bucket, 0.0 when nothing was measured."""
    pairs = [(bucket.le_microseconds, bucket.count) for bucket in buckets]
    total = sum(count for _, count in pairs)
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for bound, count in pairs:
        seen += count
        if seen >= rank:
            return bound
    return math.inf
