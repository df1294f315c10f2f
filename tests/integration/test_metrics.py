"""The Prometheus endpoint and the OTLP metrics push, against a real server and real HTTP/gRPC.

The real-Prometheus scrape is tests/e2e/test_prometheus_scrape.py; here the exposition text is read
directly and parsed with prometheus_client's parser, the format a Prometheus server reads.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from examples.build import build_repository
from inferd import Client
from inferd.errors import InferdError
from server.app import StartupError
from server.telemetry.options import TelemetryOptions
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

BROKEN_CONFIG = """
max_batch_size: 4
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


SHADOWED_CONFIG = (
    SCALE_CONFIG
    + """
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "challenger" value: 2 }
shadow { label: "challenger" fraction: 1.0 }
"""
)


def scrape(port: int) -> Series:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-repo")
    build_repository(root, ["mlp_ranker", "tiny_lm"])
    write_model(root, "broken", BROKEN_CONFIG, {1: "raise ImportError('this model cannot load')\n"})
    write_model(root, "shadowed", SHADOWED_CONFIG, {1: scale_model(1), 2: scale_model(1.5)})
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    with ServerThread(repository, telemetry=TelemetryOptions(metrics_port=0)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.address) as sdk:
        yield sdk


def mlp_version_series(server: ServerThread) -> Series:
    assert server.server is not None
    return scrape(server.server.metrics_port)


def test_each_call_is_counted_by_model_version_and_status(server: ServerThread, client: Client) -> None:
    before = mlp_version_series(server)
    mv = {"model": "mlp_ranker", "version": "1"}
    ok_before = value(before, "inferd_requests_total", **mv, code="OK")
    bad_before = before.get(("inferd_requests_total", frozenset({**mv, "code": "INVALID_ARGUMENT"}.items())), 0.0)
    calls_before = value(before, "inferd_request_duration_seconds_count", **mv)
    rows_before = value(before, "inferd_batch_size_sum", **mv)
    for _ in range(7):
        client.predict("mlp_ranker", {"features": np.ones((2, 256), np.float32)})
    for _ in range(2):
        with pytest.raises(InferdError):
            client.predict("mlp_ranker", {"features": np.ones((2, 3), np.float32)})
    after = mlp_version_series(server)
    assert value(after, "inferd_requests_total", **mv, code="OK") - ok_before == 7
    assert value(after, "inferd_requests_total", **mv, code="INVALID_ARGUMENT") - bad_before == 2
    assert value(after, "inferd_request_duration_seconds_count", **mv) - calls_before == 9
    assert value(after, "inferd_batch_size_sum", **mv) - rows_before == 14  # 7 calls of 2 rows ran
    assert value(after, "inferd_request_duration_seconds_sum", **mv) > 0
    assert value(after, "inferd_request_duration_seconds_bucket", **mv, le="+Inf") == value(
        after, "inferd_request_duration_seconds_count", **mv
    )
    assert value(after, "inferd_queue_duration_seconds_count", **mv) >= 7
    assert value(after, "inferd_compute_duration_seconds_count", **mv) >= 1
    assert value(after, "inferd_model_version_state", **mv, state="READY") == 1
    assert value(after, "inferd_model_version_state", **mv, state="DRAINING") == 0
    assert value(after, "inferd_model_load_duration_seconds", **mv) > 0
    assert value(after, "inferd_in_flight_requests", **mv) == 0
    assert value(after, "inferd_queue_depth", **mv) == 0
    assert value(after, "inferd_queue_capacity", **mv) == 1024  # the default max_queue_size
    assert value(after, "process_resident_memory_bytes") > 0


def test_a_request_for_an_unknown_model_counts_only_as_unrouted(server: ServerThread, client: Client) -> None:
    before = mlp_version_series(server)
    with pytest.raises(InferdError):
        client.predict("no_such_model_xyz", {"features": np.ones((1, 256), np.float32)})
    after = mlp_version_series(server)
    unrouted = ("inferd_unrouted_requests_total", frozenset({("code", "NOT_FOUND")}))
    assert after[unrouted] - before.get(unrouted, 0.0) == 1
    assert not any("no_such_model_xyz" in str(labels) for _, labels in after)
    assert set(after) - set(before) <= {unrouted}


def test_a_version_that_fails_to_load_is_visible(server: ServerThread) -> None:
    series = mlp_version_series(server)
    assert value(series, "inferd_model_load_failures_total", model="broken") == 1
    assert value(series, "inferd_model_version_state", model="broken", version="1", state="FAILED") == 1


def test_a_generative_stream_records_time_to_first_token_and_between_tokens(
    server: ServerThread, client: Client
) -> None:
    pieces = list(client.generate("tiny_lm", "Once upon", max_tokens=6, temperature=0, ignore_eos=True))
    assert pieces
    series = mlp_version_series(server)
    mv = {"model": "tiny_lm", "version": "1"}
    assert value(series, "inferd_time_to_first_token_seconds_count", **mv) == 1
    assert value(series, "inferd_inter_token_latency_seconds_count", **mv) == 5
    assert value(series, "inferd_generated_tokens_total", **mv) == 6
    assert value(series, "inferd_prompt_tokens_total", **mv) > 0
    assert value(series, "inferd_active_streams", **mv) == 0
    assert value(series, "inferd_requests_total", **mv, code="OK") == 1


def test_a_taken_metrics_port_stops_the_server_with_a_clear_message(repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        thread = ServerThread(repository, telemetry=TelemetryOptions(metrics_port=port))
        with pytest.raises(StartupError, match=rf"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
            thread.start()
        thread.stop()


class _MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP collector's metrics service, in process."""

    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.received = threading.Event()

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.requests.append(request)
        self.received.set()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_metrics_are_pushed_over_otlp_with_the_service_name_from_the_environment(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = _MetricsReceiver()
    collector = grpc.server(futures.ThreadPoolExecutor(2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ranker-prod")
    options = TelemetryOptions(otlp_metrics_endpoint=f"http://127.0.0.1:{port}", otlp_metrics_interval_s=0.2)
    try:
        with ServerThread(repository, telemetry=options) as running, Client(running.address) as sdk:
            sdk.predict("mlp_ranker", {"features": np.ones((1, 256), np.float32)})

            def pushed_request_count() -> bool:
                return any(_ok_count(r) >= 1 for r in list(receiver.requests))

            eventually(pushed_request_count, what="an OTLP export with the Predict counted")
            assert running.server is not None and running.server.metrics_port == 0  # no endpoint asked for
    finally:
        collector.stop(0)
    resource = {a.key: a.value.string_value for a in receiver.requests[-1].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "ranker-prod"


def _ok_count(request: metrics_service_pb2.ExportMetricsServiceRequest) -> float:
    for resource_metrics in request.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "inferd_requests":
                    continue
                for point in metric.sum.data_points:
                    labels = {a.key: a.value.string_value for a in point.attributes}
                    if labels == {"model": "mlp_ranker", "version": "1", "code": "OK"}:
                        return point.as_double or float(point.as_int)
    return 0.0


def test_the_access_logs_lost_lines_are_a_metric_when_it_is_on(repository: Path, tmp_path: Path) -> None:
    from server.telemetry.access_log import AccessLogOptions

    options = TelemetryOptions(metrics_port=0, access_log=AccessLogOptions(destination=str(tmp_path / "a.jsonl")))
    with ServerThread(repository, telemetry=options) as running:
        assert running.server is not None
        series = scrape(running.server.metrics_port)
    assert value(series, "inferd_access_log_dropped_lines_total") == 0


def test_without_the_access_log_there_is_no_lost_lines_metric(server: ServerThread) -> None:
    assert not any(name == "inferd_access_log_dropped_lines_total" for name, _ in mlp_version_series(server))


def test_shadow_agreement_is_exported_on_the_shadow_version(server: ServerThread, client: Client) -> None:
    for _ in range(3):
        client.predict("shadowed", {"x": np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)}, label="stable")
    labels = {"model": "shadowed", "version": "2", "primary_version": "1", "output": "y"}

    def compared() -> float:
        series = mlp_version_series(server)
        return series.get(("inferd_shadow_comparisons_total", frozenset(labels.items())), 0.0)

    eventually(lambda: compared() == 3, what="three shadow comparisons exported")
    series = mlp_version_series(server)
    # y = 1.5 x against y = x: the mean absolute difference of [0.5, 1, 1.5, 2] is 1.25, argmax agrees
    assert value(series, "inferd_shadow_mean_abs_diff", **labels) == pytest.approx(1.25)
    assert value(series, "inferd_shadow_argmax_agreement_ratio", **labels) == 1.0
