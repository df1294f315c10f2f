"""Signals: SIGTERM under load shuts down in logged steps with no CANCELLED answer; one during start-up
stops without waiting for slow loads; a second one during a drain stops at once (exit 1)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc
from tests.e2e.server_process import ServerProcess, health_status
from tests.support import SCALE_CONFIG, eventually, scale_model, write_model

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

#: a model whose call on x = 7 runs until the test creates RELEASE (it says it is running by creating RUNNING);
#: other calls (the warm-up's) return at once
HELD_MODEL = """
import pathlib
import time

import numpy as np

class Model:
    def infer(self, inputs):
        if float(np.asarray(inputs["x"]).flat[0]) != 7.0:
            return {"y": np.asarray(inputs["x"])}
        pathlib.Path(RUNNING).touch()
        end = time.monotonic() + 30
        while not pathlib.Path(RELEASE).exists() and time.monotonic() < end:
            time.sleep(0.01)
        return {"y": np.asarray(inputs["x"])}
"""


class Load:
    """Threads sending Predict at a steady total rate, recording each answer's status per thread.

    On UNAVAILABLE a thread does what a client should: retry on another replica. There is none here,
    so it backs off and tries this address again, and keeps going until stopped.
    """

    def __init__(self, address: str, threads: int = 4, rate: float = 200.0, backoff_s: float = 0.5) -> None:
        self.address = address
        self.interval = threads / rate
        self.backoff_s = backoff_s
        self.results: list[list[tuple[str, str]]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.request = inference_pb2.PredictRequest(
            model_name="m", inputs=[from_numpy("x", np.ones((1, 4), np.float32))]
        )

    def _run(self, index: int) -> None:
        record = self.results[index].append
        with grpc.insecure_channel(self.address) as channel:
            predict = inference_pb2_grpc.InferenceServiceStub(channel).Predict
            while not self._stop.is_set():
                try:
                    predict(self.request, timeout=10)
                    record(("OK", ""))
                except grpc.RpcError as err:
                    record((err.code().name, err.details() or ""))
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        self._stop.wait(self.backoff_s)
                        continue
                self._stop.wait(self.interval)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self, code: str, detail: str = "") -> int:
        return sum(1 for answers in self.results for c, d in list(answers) if c == code and detail in d)


def test_sigterm_under_load_answers_ok_then_unavailable_never_cancelled_and_logs_each_step(tmp_path: Path):
    write_model(tmp_path / "repo", "m", SCALE_CONFIG, {1: scale_model(2)})
    server = ServerProcess(tmp_path / "repo", tmp_path / "server", ["--drain-seconds", "0.5"]).wait_ready()
    load = Load(server.address).start()
    try:
        eventually(lambda: load.count("OK") >= 100, what="load is being served")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        exited = [len(answers) for answers in load.results]
        # every client meets the closed port afterwards: a connection failure, UNAVAILABLE
        eventually(
            lambda: all(len(answers) > n for answers, n in zip(load.results, exited, strict=True)),
            what="each client answered after the exit",
        )
    finally:
        load.stop()
        server.terminate()
    codes = Counter(code for answers in load.results for code, _ in answers)
    assert set(codes) == {"OK", "UNAVAILABLE"}, codes  # no CANCELLED
    for answers in load.results:
        first_refusal = next(i for i, (code, _) in enumerate(answers) if code != "OK")
        assert all(code == "UNAVAILABLE" for code, _ in answers[first_refusal:]), answers[first_refusal:]
    # the handlers refused calls while the port was still open, so clients heard it before the close
    assert load.count("UNAVAILABLE", "server is shutting down; retry on another replica") >= 1
    log = server.log()
    steps = [
        "SIGTERM received",
        "health is NOT_SERVING",
        "drain window of 0.5s started",
        "drain window ended",
        "refusing new calls with UNAVAILABLE",
        "port closed; in-flight calls finished",
        "models closed",
        "exit",
    ]
    at = [log.find(f"shutdown: {step}") for step in steps]
    assert all(i >= 0 for i in at), [step for step, i in zip(steps, at, strict=True) if i < 0]
    assert at == sorted(at), "the shutdown steps are logged out of order"
    assert "expired" not in log


def test_a_call_still_running_when_the_grace_period_ends_is_ended_unavailable_and_logged(tmp_path: Path):
    running, release = tmp_path / "running", tmp_path / "release"
    source = HELD_MODEL.replace("RUNNING", repr(str(running))).replace("RELEASE", repr(str(release)))
    write_model(tmp_path / "repo", "m", SCALE_CONFIG + 'execution: "thread"\n', {1: source})
    server = ServerProcess(tmp_path / "repo", tmp_path / "server", ["--grace-seconds", "0.3"]).wait_ready()
    outcome: list[tuple[grpc.StatusCode, str]] = []

    def call() -> None:
        with grpc.insecure_channel(server.address) as channel:
            try:
                request = inference_pb2.PredictRequest(
                    model_name="m", inputs=[from_numpy("x", np.full((1, 4), 7.0, np.float32))]
                )
                inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=30)
                outcome.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as err:
                outcome.append((err.code(), err.details() or ""))

    caller = threading.Thread(target=call, daemon=True)
    try:
        caller.start()
        eventually(running.exists, what="the call is running in the model")
        server.process.send_signal(signal.SIGTERM)
        eventually(lambda: "grace of 0.3s expired" in server.log(), what="the grace expiry is logged")
        caller.join(30)
        assert outcome == [(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")]  # gRPC's words, but retryable
        release.touch()  # let the engine thread return so the model can close
        assert server.process.wait(60) == 0
    finally:
        release.touch()
        server.terminate()
    assert "shutdown: models closed" in server.log()


def test_a_signal_during_start_up_stops_without_waiting_for_slow_loads(tmp_path: Path):
    marker = tmp_path / "loading"
    write_model(tmp_path / "repo", "slow", SCALE_CONFIG, {1: SLOW_MODEL.replace("MARKER", repr(str(marker)))})
    server = ServerProcess(tmp_path / "repo", tmp_path / "server")
    try:
        eventually(marker.exists, what="the slow load started")
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
        eventually(lambda: health_status(server.address) == NOT_SERVING, what="NOT_SERVING")
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 1
        assert time.monotonic() - sent < 20  # not the 60 s drain
        assert "second signal" in server.log()
    finally:
        server.terminate()
