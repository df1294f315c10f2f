"""inferd.statistics: latency quantiles read from a ModelStatistics reply's histogram."""

from __future__ import annotations

import ast
import math
from pathlib import Path

from inferd.statistics import latency_quantile
from inferd.v1 import inference_pb2
from server.telemetry.stats import LATENCY_BOUNDS_US, VersionStats


def _buckets(stats: VersionStats) -> list[inference_pb2.LatencyBucket]:
    """The histogram as the server sends it (server/api/views.py)."""
    return [
        inference_pb2.LatencyBucket(le_microseconds=bound, count=count)
        for bound, count in zip(LATENCY_BOUNDS_US, stats.latency_counts, strict=True)
    ]


def test_quantiles_are_the_upper_bounds_of_the_buckets_that_hold_them():
    stats = VersionStats()
    for _ in range(98):
        stats.record_latency(250_000)  # 250 µs → the 300 µs bucket
    for _ in range(2):
        stats.record_latency(4_000_000)  # 4 ms → the 5 ms bucket
    assert latency_quantile(_buckets(stats), 0.5) == 300
    assert latency_quantile(_buckets(stats), 0.99) == 5_000
    assert latency_quantile(_buckets(stats), 1.0) == 5_000


def test_a_quantile_past_every_finite_bound_is_infinite_and_an_empty_histogram_is_zero():
    stats = VersionStats()
    stats.record_latency(10**13)
    assert latency_quantile(_buckets(stats), 0.5) == math.inf
    assert latency_quantile(_buckets(VersionStats()), 0.99) == 0.0
    assert latency_quantile([], 0.5) == 0.0


def test_the_cli_reads_statistics_through_the_sdk_not_server_internals():
    cli = Path(__file__).resolve().parents[2] / "server" / "cli"
    for name in ("client.py", "generate.py", "stats_watch.py", "shadow.py", "compare.py", "profile.py"):
        tree = ast.parse((cli / name).read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        server = [m for m in modules if m.split(".")[0] == "server" and not m.startswith("server.cli")]
        assert not server, f"server/cli/{name} imports {server}"
