from __future__ import annotations

import math

from server.telemetry.stats import LATENCY_BOUNDS_US, VersionStats, latency_quantile


def test_latency_lands_in_the_first_bucket_whose_bound_covers_it():
    stats = VersionStats()
    stats.record_latency(40_000)  # 40 µs
    stats.record_latency(100_000)  # exactly 100 µs: bounds are inclusive
    stats.record_latency(100_001)
    stats.record_latency(10**13)  # far past the last finite bound
    by_bound = dict(zip(LATENCY_BOUNDS_US, stats.latency_counts, strict=True))
    assert by_bound[50] == 1 and by_bound[100] == 1 and by_bound[200] == 1 and by_bound[math.inf] == 1


def test_quantiles_report_bucket_upper_bounds():
    stats = VersionStats()
    for _ in range(98):
        stats.record_latency(250_000)  # 250 µs → the 300 µs bucket
    for _ in range(2):
        stats.record_latency(4_000_000)  # 4 ms → the 5 ms bucket
    assert latency_quantile(stats.latency_counts, 0.5) == 300
    assert latency_quantile(stats.latency_counts, 0.99) == 5_000
    assert latency_quantile([0] * len(LATENCY_BOUNDS_US), 0.5) == 0.0
