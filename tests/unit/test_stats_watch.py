"""``inferd stats --watch``'s arithmetic: every figure is over the interval between two ModelStatistics replies."""

from __future__ import annotations

from inferd.v1 import inference_pb2
from server.cli.stats_watch import render, sample_of

BOUNDS_US = (100.0, 1_000.0, 10_000.0, float("inf"))


def reply(
    success: int, latency: tuple[int, ...], failures: dict[str, int] | None = None, rows: int = 0, executions: int = 0
) -> inference_pb2.VersionStatistics:
    return inference_pb2.VersionStatistics(
        name="mlp",
        version=2,
        engine="onnxruntime",
        success_count=success,
        failure_count=failures or {},
        inference_count=rows,
        execution_count=executions,
        queue_depth=7,
        latency_buckets=[
            inference_pb2.LatencyBucket(le_microseconds=bound, count=count)
            for bound, count in zip(BOUNDS_US, latency, strict=True)
        ],
    )


def row(lines: list[str]) -> list[str]:
    return next(line.split() for line in lines if line.startswith("mlp "))


def test_rates_quantiles_batch_sizes_and_errors_come_from_the_interval_alone() -> None:
    # before: 1000 fast calls; in the interval: 100 more, of which 2 slow, and 3 failures
    before = {("mlp", 2): sample_of(reply(1_000, (1_000, 0, 0, 0), {"INTERNAL": 5}, rows=1_000, executions=500))}
    now = {
        ("mlp", 2): sample_of(
            reply(1_100, (1_000, 98, 2, 0), {"INTERNAL": 7, "DEADLINE_EXCEEDED": 1}, rows=1_400, executions=600)
        )
    }
    lines = render("host:1", now, before, 2.0, "12:00:00")
    assert row(lines) == ["mlp", "2", "onnxruntime", "51.5", "1", "10", "7", "4.0", "-", "-"]
    assert "mlp v2 errors: DEADLINE_EXCEEDED 1, INTERNAL 2" in lines


def test_a_version_loaded_or_reloaded_since_the_last_poll_counts_from_zero() -> None:
    now = {("mlp", 2): sample_of(reply(10, (10, 0, 0, 0), rows=10, executions=10))}
    fresh = row(render("host:1", now, {}, 1.0, "12:00:00"))
    reloaded_before = {("mlp", 2): sample_of(reply(5_000, (5_000, 0, 0, 0), rows=5_000, executions=5_000))}
    reloaded = row(render("host:1", now, reloaded_before, 1.0, "12:00:00"))
    assert fresh[3] == reloaded[3] == "10.0"
    assert fresh[4] == reloaded[4] == "0.1"


def test_an_idle_interval_shows_no_latency_or_batch_size() -> None:
    same = {("mlp", 2): sample_of(reply(10, (10, 0, 0, 0), rows=10, executions=10))}
    assert row(render("host:1", same, same, 1.0, "12:00:00"))[3:8] == ["0.0", "-", "-", "7", "-"]
