"""merge_prometheus, WorkerMetrics and MetricsEndpoint: several workers' /metrics as one exposition.

The texts are made by prometheus_client's own exposition (the format the workers' endpoints serve) and the
merged output is read back with prometheus_client's parser, which proves it is valid exposition.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.telemetry.options import EndpointTls
from server.workers.aggregate_metrics import MetricsEndpoint, WorkerMetrics, merge_prometheus
from tests.tls_support import cert_fingerprint, make_tls_files, served_certificate

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
AWKWARD = 'a "quoted" back\\slash\nnew line'


def _worker_text(requests: float, depth: float, observations: list[float], rss: float) -> str:
    registry = CollectorRegistry()
    counter = Counter("inferd_requests", "calls by status", ["model", "code"], registry=registry)
    counter.labels("m", "OK").inc(requests)
    counter.labels(AWKWARD, "OK").inc(1)
    Gauge("inferd_queue_depth", "requests waiting now", ["model"], registry=registry).labels("m").set(depth)
    Gauge("process_resident_memory_bytes", "resident set size", registry=registry).set(rss)
    histogram = Histogram(
        "inferd_request_duration_seconds", "arrival to reply", ["model"], buckets=(0.1, 1.0), registry=registry
    )
    summary = Summary("inferd_batch_rows", "rows per batch", registry=registry)
    for value in observations:
        histogram.labels("m").observe(value)
        summary.observe(value)
    return generate_latest(registry).decode()


def _parse(text: str) -> Series:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _merged() -> tuple[str, Series]:
    a = _worker_text(requests=3, depth=2, observations=[0.05, 0.5], rss=100)
    b = _worker_text(requests=4, depth=5, observations=[0.05, 2.0, 3.0], rss=200)
    text = merge_prometheus([("0", a), ("1", b)])
    return text, _parse(text)


def _at(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def test_counters_and_histograms_with_the_same_name_and_labels_are_summed() -> None:
    _, series = _merged()
    assert _at(series, "inferd_requests_total", model="m", code="OK") == 7
    assert _at(series, "inferd_requests_total", model=AWKWARD, code="OK") == 2  # escaped and read back
    assert _at(series, "inferd_request_duration_seconds_bucket", model="m", le="0.1") == 2
    assert _at(series, "inferd_request_duration_seconds_bucket", model="m", le="1.0") == 3
    assert _at(series, "inferd_request_duration_seconds_bucket", model="m", le="+Inf") == 5
    assert _at(series, "inferd_request_duration_seconds_count", model="m") == 5
    assert _at(series, "inferd_request_duration_seconds_sum", model="m") == pytest.approx(5.6)
    assert _at(series, "inferd_batch_rows_count") == 5
    assert _at(series, "inferd_batch_rows_sum") == pytest.approx(5.6)


def test_gauges_keep_one_series_per_worker() -> None:
    _, series = _merged()
    assert _at(series, "inferd_queue_depth", model="m", worker="0") == 2
    assert _at(series, "inferd_queue_depth", model="m", worker="1") == 5
    assert _at(series, "process_resident_memory_bytes", worker="0") == 100
    assert _at(series, "process_resident_memory_bytes", worker="1") == 200
    assert not any(name == "inferd_queue_depth" and "worker" not in dict(labels) for name, labels in series)


def test_help_and_type_once_per_family_and_created_series_dropped() -> None:
    text, series = _merged()
    for family in ("inferd_requests_total", "inferd_queue_depth", "inferd_request_duration_seconds"):
        assert text.count(f"# TYPE {family} ") == 1 and text.count(f"# HELP {family} ") == 1
    assert "_created" not in text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert len(samples) == len(series)  # no series twice
    assert not any(name.endswith("_created") for name, _ in series)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["inferd_requests"] == "counter" and types["inferd_queue_depth"] == "gauge"
    assert types["inferd_request_duration_seconds"] == "histogram" and types["inferd_batch_rows"] == "summary"


def test_a_worker_label_already_present_is_kept_as_exported_worker() -> None:
    text = '# TYPE g gauge\ng{worker="w"} 1\n'
    assert _at(_parse(merge_prometheus([("3", text)])), "g", exported_worker="w", worker="3") == 1


def test_summary_quantiles_stay_per_worker_and_untyped_series_too() -> None:
    text = '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\nloose 4\n'
    series = _parse(merge_prometheus([("0", text), ("1", text)]))
    assert _at(series, "s", quantile="0.5", worker="0") == 1 and _at(series, "s", quantile="0.5", worker="1") == 1
    assert _at(series, "s_sum") == 4 and _at(series, "s_count") == 6
    assert _at(series, "loose", worker="0") == 4


def test_bad_exposition_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        merge_prometheus([("0", "this is { not exposition\n")])


# --- WorkerMetrics and MetricsEndpoint over real HTTP ----------------------------------------------------


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


@pytest.fixture
def two_workers() -> Iterator[list[tuple[str, str]]]:
    endpoints = [MetricsEndpoint(_constant(t)) for t in (_worker_text(1, 1, [0.5], 10), _worker_text(2, 2, [], 20))]
    try:
        yield [(str(i), f"http://127.0.0.1:{e.start()}/metrics") for i, e in enumerate(endpoints)]
    finally:
        for endpoint in endpoints:
            endpoint.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listening socket that accepts and never answers (a worker stuck in a long GIL-holding call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(reply.read().decode())


def test_the_supervisor_serves_the_merged_view_and_counts_workers_that_do_not_answer(
    two_workers: list[tuple[str, str]], silent_port: int
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]  # bound, not listening: connections are refused
        targets = [
            *two_workers,
            ("2", f"http://127.0.0.1:{silent_port}/metrics"),
            ("3", f"http://127.0.0.1:{refused}/metrics"),
        ]
        metrics = WorkerMetrics(lambda: targets, lambda: {"serving": 2, "restarting": 1}, timeout=0.5)
        endpoint = MetricsEndpoint(metrics.collect)
        port = endpoint.start()
        try:
            series = _parse(_get(f"http://127.0.0.1:{port}/metrics"))
            series = _parse(_get(f"http://127.0.0.1:{port}/metrics"))
        finally:
            endpoint.stop()
    assert _at(series, "inferd_requests_total", model="m", code="OK") == 3
    assert {labels for name, labels in series if name == "process_resident_memory_bytes"} == {
        frozenset({("worker", "0")}),
        frozenset({("worker", "1")}),
    }
    assert _at(series, "inferd_workers", state="serving") == 2
    assert _at(series, "inferd_workers", state="starting") == 0
    assert _at(series, "inferd_workers", state="restarting") == 1
    assert _at(series, "inferd_workers_scrape_failures_total", worker="2") == 2
    assert _at(series, "inferd_workers_scrape_failures_total", worker="3") == 2
    assert ("inferd_workers_scrape_failures_total", frozenset({("worker", "0")})) not in series


def test_a_worker_answering_garbage_is_left_out_and_counted() -> None:
    good = _worker_text(1, 1, [], 1)
    endpoints = [MetricsEndpoint(lambda: good), MetricsEndpoint(lambda: "not { exposition\n")]
    urls = [(str(i), f"http://127.0.0.1:{e.start()}/metrics") for i, e in enumerate(endpoints)]
    try:
        metrics = WorkerMetrics(lambda: urls, dict)
        series = _parse(metrics.collect())
    finally:
        for endpoint in endpoints:
            endpoint.stop()
    assert _at(series, "inferd_requests_total", model="m", code="OK") == 1
    assert metrics.failures == {"1": 1}


def test_an_async_collect_runs_on_the_given_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    seen: list[asyncio.AbstractEventLoop] = []

    async def collect() -> str:
        seen.append(asyncio.get_running_loop())
        return "# TYPE x gauge\nx 1\n"

    endpoint = MetricsEndpoint(collect, loop=loop)
    try:
        assert _parse(_get(f"http://127.0.0.1:{endpoint.start()}/metrics")) == {("x", frozenset()): 1}
    finally:
        endpoint.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert seen == [loop]


def test_a_failing_collect_is_a_500_and_other_paths_404() -> None:
    def collect() -> str:
        raise RuntimeError("boom")

    endpoint = MetricsEndpoint(collect)
    port = endpoint.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as failed:
            _get(f"http://127.0.0.1:{port}/metrics")
        assert failed.value.code == 500
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(f"http://127.0.0.1:{port}/other")
        assert missing.value.code == 404
    finally:
        endpoint.stop()


def test_the_endpoint_serves_https_with_mtls_when_the_metrics_options_have_tls(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    tls = EndpointTls(files.server_cert, files.server_key, files.ca)
    endpoint = MetricsEndpoint(lambda: "# TYPE x gauge\nx 2\n", tls=tls)
    port = endpoint.start()
    try:
        trusted = ssl.create_default_context(cafile=str(files.ca))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(f"https://localhost:{port}/metrics", trusted)  # no client certificate
        trusted.load_cert_chain(str(files.client_cert), str(files.client_key))
        assert _parse(_get(f"https://localhost:{port}/metrics", trusted)) == {("x", frozenset()): 2}
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/metrics")  # plain HTTP on the TLS port
    finally:
        endpoint.stop()


def test_the_https_endpoint_picks_up_a_rotated_certificate(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    endpoint = MetricsEndpoint(lambda: "", tls=EndpointTls(files.server_cert, files.server_key))
    port = endpoint.start()
    try:
        first = cert_fingerprint(served_certificate("127.0.0.1", port, files.ca))
        assert first == cert_fingerprint(files.server_cert.read_bytes())
        files.rotate_server()
        rotated = cert_fingerprint(served_certificate("127.0.0.1", port, files.ca))
        assert rotated == cert_fingerprint(files.server2_cert.read_bytes())
    finally:
        endpoint.stop()
