"""``inferd serve`` configured for tracing the way an operator does it: OTEL_* variables only."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inferd import Client
from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env
from tests.otlp_receiver import otlp_receiver
from tests.support import SCALE_CONFIG, scale_model, write_model

pytestmark = pytest.mark.e2e

X = np.ones((1, 4), np.float32)


def test_serve_exports_spans_to_the_collector_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(tmp_path / "repo", "scale", SCALE_CONFIG, {1: scale_model(2)})
    trace_id, parent_id = random.getrandbits(128) or 1, random.getrandbits(64) or 1
    with otlp_receiver() as (collector, endpoint):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # only calls whose caller sampled them
        monkeypatch.setenv("OTEL_SERVICE_NAME", "inferd-e2e")
        server = ServerProcess(tmp_path / "repo", tmp_path / "server").wait_ready()
        try:
            with Client(server.address) as client:
                client.predict("scale", {"x": X})  # no parent, ratio 0: not sampled
            metadata = [("traceparent", f"00-{trace_id:032x}-{parent_id:016x}-01")]
            with Client(server.address, metadata=metadata) as client:
                client.predict("scale", {"x": X})
        finally:
            assert server.terminate() == 0, server.log()[-4000:]  # SIGTERM flushes the spans
        spans = collector.spans()
        resources = collector.resources()

    assert {int.from_bytes(span.trace_id, "big") for span in spans if span.name != "batch"} == {trace_id}
    assert {span.name for span in spans} == {"inferd.v1.InferenceService/Predict", "queue", "compute", "batch"}
    assert all(resource["service.name"] == "inferd-e2e" for resource in resources)
    assert (
        f"tracing on: spans to OTLP/gRPC to {endpoint} (plaintext), sampler parentbased_traceidratio 0" in server.log()
    )


def test_serve_refuses_an_unknown_sampler_before_starting(tmp_path: Path) -> None:
    env = tool_env(OTEL_TRACES_EXPORTER="otlp", OTEL_TRACES_SAMPLER="sometimes")
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--repository", str(tmp_path), "--port", "0", "--no-metrics"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "inferd: tracing: OTEL_TRACES_SAMPLER='sometimes' is not a sampler inferd knows" in done.stderr
