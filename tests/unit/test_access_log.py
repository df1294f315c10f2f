"""The access log observer on its own (a stalled disk, sampling, a traced call's trace id) and its flags.

The end-to-end behaviour (fields, errors always logged, what never appears) is tests/integration/test_access_log.py.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from server.cli.main import build_parser
from server.cli.telemetry_flags import telemetry_options
from server.telemetry.access_log import AccessLog, AccessLogOptions, rfc3339
from server.telemetry.calls import CallObservers, CallRecord, StaticCallSource
from tests.support import eventually


def record(code: str = "OK", **fields: object) -> CallRecord:
    started = time.perf_counter_ns()
    call = CallRecord(CallObservers(), "Predict", StaticCallSource((), "ipv4:127.0.0.1:1"), 10, started, time.time_ns())
    call.code = code
    call.ended_ns = started + 1_000
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def test_lines_beyond_the_queue_are_dropped_and_counted_while_the_disk_is_stalled(tmp_path: Path) -> None:
    pipe = tmp_path / "stalled"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: writes block once the pipe is full
    access_log = AccessLog(AccessLogOptions(pipe, queue_lines=10))
    calls = 5_000  # far more than the pipe's buffer and the queue hold
    for i in range(calls):
        access_log.end(record("INTERNAL", request_id=f"r{i}", message="boom"))
    assert access_log.dropped > 0
    received = bytearray()

    def drain() -> None:
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):
            received.extend(chunk)

    draining = threading.Thread(target=drain)
    draining.start()
    access_log.close()
    draining.join(30)
    os.close(reader)
    written = received.decode().splitlines()
    assert len(written) == access_log.written == calls - access_log.dropped
    assert json.loads(written[0])["request_id"] == "r0"


def test_a_rate_between_zero_and_one_logs_some_ok_calls_and_every_failure(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    access_log = AccessLog(AccessLogOptions(path, sample_rate=0.5))
    for i in range(2_000):
        access_log.end(record(request_id=f"ok{i}"))
    for i in range(50):
        access_log.end(record("UNAVAILABLE", request_id=f"err{i}"))
    access_log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    ok = [line for line in lines if line["code"] == "OK"]
    assert 0 < len(ok) < 2_000
    assert sum(line["code"] == "UNAVAILABLE" for line in lines) == 50


def test_a_traced_call_logs_its_span_trace_id(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    access_log = AccessLog(AccessLogOptions(path))
    span = TracerProvider().get_tracer("test").start_span("Predict")
    access_log.end(record(request_id="traced", trace=span))
    access_log.close()
    line = json.loads(path.read_text())
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_lines_append_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    path.write_text('{"earlier":true}\n')
    access_log = AccessLog(AccessLogOptions(str(path)))
    access_log.end(record(request_id="later"))
    eventually(lambda: access_log.written == 1, what="the line written")
    access_log.close()
    first, second = path.read_text().splitlines()
    assert json.loads(first) == {"earlier": True} and json.loads(second)["request_id"] == "later"


def test_times_are_rfc3339_utc_with_microseconds() -> None:
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"


def serve_flags(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "--repository", "models", *flags])


def test_serve_flags_turn_the_access_log_on_with_its_sample_rate(tmp_path: Path) -> None:
    path = str(tmp_path / "access.jsonl")
    on = telemetry_options(serve_flags("--access-log", path, "--access-log-sample-rate", "0.01"), {})
    assert on.access_log == AccessLogOptions(path, 0.01)
    assert telemetry_options(serve_flags("--access-log", "-"), {}).access_log == AccessLogOptions("-", 1.0)
    assert telemetry_options(serve_flags(), {}).access_log is None


def test_serve_flags_refuse_a_bad_rate_or_path_before_the_server_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        serve_flags("--access-log", "-", "--access-log-sample-rate", "1.5")
    assert "must be a number from 0 to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot write the access log"):
        telemetry_options(serve_flags("--access-log", str(tmp_path / "missing" / "access.jsonl")), {})
    with pytest.raises(SystemExit, match="needs --access-log"):
        telemetry_options(serve_flags("--access-log-sample-rate", "0.5"), {})
