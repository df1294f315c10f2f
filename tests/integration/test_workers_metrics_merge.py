"""Two real servers (as two workers would be) → one statistics reply and one /metrics, summed.

Each server counts only the calls it served; the supervisor's view (server/workers/aggregate_*.py) must
show their sum for counters and one series per worker for gauges. Real processes' endpoints, real
channels, real HTTP; the merged exposition is read back with prometheus_client's parser.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferd import Client
from inferd.v1 import inference_pb2
from server.telemetry.options import TelemetryOptions
from server.workers.aggregate_metrics import MetricsEndpoint, WorkerMetrics
from server.workers.aggregate_stats import sum_statistics
from tests.prometheus_support import find_binary
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
CALLS = (3, 5)  # Predict calls sent to worker 0 and worker 1
MV = {"model": "scale", "version": "1"}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerThread]]:
    root = tmp_path_factory.mktemp("workers-repo")
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    servers = [ServerThread(root, telemetry=TelemetryOptions(metrics_port=0)) for _ in CALLS]
    try:
        for server in servers:
            server.start()
        for server, calls in zip(servers, CALLS, strict=True):
            with Client(server.address) as client:
                for _ in range(calls):
                    client.predict("scale", {"x": np.ones((2, 4), np.float32)})
        yield servers
    finally:
        for server in servers:
            server.stop()


def _parse(text: str) -> Series:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _at(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def test_statistics_of_two_servers_sum_to_every_call(workers: list[ServerThread]) -> None:
    replies = []
    for server in workers:
        with Client(server.address) as client:
            replies.append(inference_pb2.ModelStatisticsResponse(statistics=client.statistics("scale")))
    merged = sum_statistics(replies)
    assert [(s.name, s.version) for s in merged.statistics] == [("scale", 1)]
    stats = merged.statistics[0]
    assert stats.success_count == sum(CALLS)
    assert stats.inference_count == 2 * sum(CALLS)
    assert sum(b.count for b in stats.latency_buckets) == sum(CALLS)
    assert [b.le_microseconds for b in stats.latency_buckets] == [
        b.le_microseconds for b in replies[0].statistics[0].latency_buckets
    ]
    assert stats.compute_time_ns == sum(r.statistics[0].compute_time_ns for r in replies)
    assert stats.engine == replies[0].statistics[0].engine != ""


def test_the_supervisors_metrics_endpoint_sums_the_workers_counters(workers: list[ServerThread]) -> None:
    targets = []
    for index, server in enumerate(workers):
        assert server.server is not None
        targets.append((str(index), f"http://127.0.0.1:{server.server.metrics_port}/metrics"))
    metrics = WorkerMetrics(lambda: targets, lambda: {"serving": len(targets)})
    endpoint = MetricsEndpoint(metrics.collect)
    port = endpoint.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        endpoint.stop()
    series = _parse(text)
    # Prometheus' own linter accepts it (valid exposition, one HELP/TYPE per family)
    checked = subprocess.run(
        [find_binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _at(series, "inferd_requests_total", **MV, code="OK") == sum(CALLS)
    assert _at(series, "inferd_request_duration_seconds_count", **MV) == sum(CALLS)
    assert _at(series, "inferd_request_duration_seconds_bucket", **MV, le="+Inf") == sum(CALLS)
    assert _at(series, "inferd_batch_size_sum", **MV) == 2 * sum(CALLS)
    for worker in ("0", "1"):
        assert _at(series, "inferd_queue_depth", **MV, worker=worker) == 0
        assert _at(series, "process_resident_memory_bytes", worker=worker) > 0
    assert _at(series, "inferd_workers", state="serving") == 2
    assert metrics.failures == {}
