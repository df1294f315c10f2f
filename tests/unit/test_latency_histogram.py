"""Server-side latency buckets (quantiles over them: the SDK, tests/unit/test_sdk_statistics.py)."""

from __future__ import annotations

import math

from server.telemetry.stats import LATENCY_BOUNDS_US, VersionStats


def test_latency_lands_in_the_first_bucket_whose_bound_covers_it():
    stats = VersionStats()
    stats.record_latency(40_000)  # 40 µs
    stats.record_latency(100_000)  # exactly 100 µs: bounds are inclusive
    stats.record_latency(100_001)
    stats.record_latency(10**13)  # far past the last finite bound
    by_bound = dict(zip(LATENCY_BOUNDS_US, stats.latency_counts, strict=True))
    assert by_bound[50] == 1 and by_bound[100] == 1 and by_bound[200] == 1 and by_bound[math.inf] == 1
