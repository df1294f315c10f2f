"""Signals: one during start-up stops without waiting for slow loads; a second one during a drain stops
at once (exit 1) instead of waiting the drain out."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.server_process import ServerProcess, health_status
from tests.support import SCALE_CONFIG, scale_model, write_model

pytestmark = pytest.mark.e2e
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SLOW_MODEL = """
import pathlib
import time

import numpy as np

class Model:
    def __init__(self):
        pathlib.Path(MARKER).write_text("loading")
        time.sleep(60)

    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"])}
"""


def wait_for(condition, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_a_signal_during_start_up_stops_without_waiting_for_slow_loads(tmp_path: Path):
    marker = tmp_path / "loading"
    write_model(tmp_path / "repo", "slow", SCALE_CONFIG, {1: SLOW_MODEL.replace("MARKER", repr(str(marker)))})
    server = ServerProcess(tmp_path / "repo", tmp_path / "server")
    try:
        wait_for(marker.exists)
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
        assert time.monotonic() - sent < 20  # the 60 s load was abandoned
        log = server.log()
        assert "signal during start-up" in log and "serving on" not in log
    finally:
        server.terminate()


def test_a_second_signal_during_the_drain_exits_at_once(tmp_path: Path):
    write_model(tmp_path / "repo", "m", SCALE_CONFIG, {1: scale_model(2)})
    server = ServerProcess(tmp_path / "repo", tmp_path / "server", ["--drain-seconds", "60"]).wait_ready()
    try:
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: health_status(server.address) == NOT_SERVING)
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 1
        assert time.monotonic() - sent < 20  # not the 60 s drain
        assert "second signal" in server.log()
    finally:
        server.terminate()
