"""A real Prometheus scrapes a real inferd: what operators query is what clients did.

The module starts ``inferd serve`` (``--metrics-port 0``) and the Debian ``prometheus`` binary scraping it
every second (its first scrape comes ~5 s after start: Prometheus applies targets on a 5 s tick); each
test sends a load and asks Prometheus' HTTP API how much its counters grew. Missing ``prometheus`` skips
these tests, except under ``INFERD_REQUIRE_PROMETHEUS=1`` (CI), where it fails them.

The dashboard test also renders deploy/grafana/inferd-dashboard.json from what Prometheus stored
(scripts/render_dashboard.py). To regenerate docs/images/dashboard.png from a longer run::

    INFERD_DASHBOARD_PNG=docs/images/dashboard.png INFERD_DASHBOARD_SECONDS=90 \\
        .venv/bin/python -m pytest -q tests/e2e/test_prometheus_scrape.py -k mixed_load
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inferd import Client
from tests.e2e.mixed_load import UNKNOWN_MODEL, mixed_load
from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env
from tests.prometheus_support import PrometheusServer
from tests.support import eventually

pytestmark = pytest.mark.e2e

MODEL = "mlp_ranker"
REQUESTS = 60
REQUESTS_OK = f'sum(inferd_requests_total{{model="{MODEL}",code="OK"}})'
P99 = f'histogram_quantile(0.99, sum by (le) (rate(inferd_request_duration_seconds_bucket{{model="{MODEL}"}}[1m])))'
#: the largest finite bucket bound: a quantile at or above it means the buckets did not hold the calls
TOP_BUCKET_S = 60.0
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "inferd-dashboard.json"
RENDER = REPO_ROOT / "scripts" / "render_dashboard.py"
#: write the dashboard picture here (e.g. docs/images/dashboard.png) instead of a temporary file
PNG_ENV = "INFERD_DASHBOARD_PNG"
#: how long the mixed load runs before rendering (default: 90 s when writing a picture, else 8 s)
SECONDS_ENV = "INFERD_DASHBOARD_SECONDS"


@dataclass
class Observed:
    inferd: ServerProcess
    prometheus: PrometheusServer


def start_inferd(repository: Path, workdir: Path) -> tuple[ServerProcess, str]:
    """``inferd serve`` with its metrics on a free port; returns it and the metrics address."""
    server = ServerProcess(repository, workdir).wait_ready()  # serves metrics on --metrics-port 0
    if not server.metrics_port:
        server.kill()
        pytest.fail(f"no metrics port in {server.metrics_port_file}\n--- server log ---\n{server.log()[-4000:]}")
    return server, f"127.0.0.1:{server.metrics_port}"


@pytest.fixture(scope="module")
def observed(
    example_repository: Path, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    server, metrics = start_inferd(example_repository, workdir / "inferd")
    try:
        with PrometheusServer(workdir / "prometheus", [metrics], binary=prometheus_binary) as prometheus:
            yield Observed(server, prometheus)
    finally:
        code = server.terminate()
    assert code == 0, f"inferd exited with {code} after SIGTERM\n{server.log()[-4000:]}"


def requests_by_model_and_code(prometheus: PrometheusServer) -> Counter[tuple[str, str]]:
    """What Prometheus stored last: Predict/PredictStream calls by (model, code); unrouted ones under the
    model name ``UNKNOWN_MODEL`` (the only unknown name the load uses)."""
    counts: Counter[tuple[str, str]] = Counter()
    for sample in prometheus.query("sum by (model, code) (inferd_requests_total)"):
        counts[sample["metric"]["model"], sample["metric"]["code"]] = round(float(sample["value"][1]))
    for sample in prometheus.query("sum by (code) (inferd_unrouted_requests_total)"):
        counts[UNKNOWN_MODEL, sample["metric"]["code"]] = round(float(sample["value"][1]))
    return counts


def test_prometheus_counts_every_request_and_computes_a_p99(observed: Observed) -> None:
    prometheus = observed.prometheus
    # a scrape before the load: rate() needs a sample on each side of the calls
    prometheus.wait_for_scrapes(1)
    before = prometheus.query_value(REQUESTS_OK) or 0.0
    rng = np.random.default_rng(3)
    with Client(observed.inferd.address, timeout=30) as client:
        for _ in range(REQUESTS):
            client.predict(MODEL, {"features": rng.random((1, 256), dtype=np.float32)})

    eventually(
        lambda: (prometheus.query_value(REQUESTS_OK) or 0) >= before + REQUESTS,
        what=f"Prometheus to see {REQUESTS} more OK requests",
    )
    prometheus.wait_for_scrapes(1)  # one more scrape, after the last call ended: nothing further comes
    assert prometheus.query_value(REQUESTS_OK) == before + REQUESTS
    p99 = prometheus.query_value(P99)
    assert p99 is not None and math.isfinite(p99), f"p99 is {p99}"
    assert 0 < p99 < TOP_BUCKET_S


async def test_mixed_load_is_counted_by_code_and_the_dashboard_renders(observed: Observed, tmp_path: Path) -> None:
    picture = os.environ.get(PNG_ENV)
    seconds = float(os.environ.get(SECONDS_ENV) or (90 if picture else 8))
    output = Path(picture).resolve() if picture else tmp_path / "dashboard.png"
    prometheus = observed.prometheus
    prometheus.wait_for_scrapes(1)
    before = requests_by_model_and_code(prometheus)
    started = time.time()

    sent = await mixed_load(observed.inferd.address, seconds)

    assert sent["tiny_lm", "OK"] and sent["mlp_ranker", "INVALID_ARGUMENT"] and sent[UNKNOWN_MODEL, "NOT_FOUND"], sent
    # text_encoder's 2 ms deadlines race the server: a call may end OK there and DEADLINE_EXCEEDED here
    exact = {key: n for key, n in sent.items() if key[0] != "text_encoder"}

    def counted() -> dict[tuple[str, str], int]:
        now = requests_by_model_and_code(prometheus)
        return {key: now[key] - before[key] for key in exact}

    eventually(lambda: counted() == exact, what=f"Prometheus' counts to match the client's {exact}")
    prometheus.wait_for_scrapes(1)
    assert counted() == exact
    render_dashboard(prometheus, output, started - 5, seconds)


def render_dashboard(prometheus: PrometheusServer, output: Path, start: float, seconds: float) -> None:
    """scripts/render_dashboard.py against the test Prometheus: every query must run, most panels draw data."""
    command = [
        sys.executable,
        str(RENDER),
        "--prometheus",
        prometheus.url,
        "--dashboard",
        str(DASHBOARD),
        "--output",
        str(output),
        "--start",
        str(start),
        "--end",
        str(time.time()),
        "--rate-interval",
        "30s" if seconds >= 60 else "5s",
        "--strict",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    summary = re.search(r"(\d+) panels, (\d+) without data", result.stderr)
    assert summary is not None, result.stderr
    panels, empty = int(summary[1]), int(summary[2])
    # GPU panels stay empty without NVML, shadow panels without a shadow version
    assert panels > 0 and empty < panels / 2, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
