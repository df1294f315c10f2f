"""The access log (``--access-log``) against a real server: what a line says, which calls are logged, what never is.

Two servers: one logging every call (sample rate 1) with a batching model held until two requests wait
(the test-only hook of server/models/test_hooks.py, so batch fields are known), one logging failures only
(sample rate 0). Lines are found by the request ids the tests send; the writer keeps call order, so once a
later call's line is there, an earlier call's missing line is missing for good.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from server.models.test_hooks import HOLD_UNTIL_QUEUED_ENV
from server.telemetry.access_log import FIELDS, AccessLog, AccessLogError, AccessLogOptions
from server.telemetry.options import TelemetryOptions
from server.telemetry.tracing_options import TracingOptions
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
#: strings that must never reach a line: a payload parameter, routing key and metadata values
SECRETS = ("payload-secret-7f3a", "routing-secret-91c2", "metadata-secret-5d0e", "bearer-secret-c4b8")
HELD_CONFIG = SCALE_CONFIG + "dynamic_batching { }\n"


def build_repository(root: Path) -> Path:
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "held2", HELD_CONFIG, {3: scale_model(3)})
    return root


def start(root: Path, log: Path, rate: float) -> ServerThread:
    options = TelemetryOptions(access_log=AccessLogOptions(str(log), sample_rate=rate))
    return ServerThread(root, telemetry=options).start()


@pytest.fixture(scope="module")
def every_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    root = build_repository(tmp_path_factory.mktemp("access-log-repo"))
    log = tmp_path_factory.mktemp("access-log") / "access.jsonl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(HOLD_UNTIL_QUEUED_ENV, "held2=2")
        server = start(root, log, 1.0)
        try:
            yield server, log
        finally:
            server.stop()


@pytest.fixture(scope="module")
def errors_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    root = build_repository(tmp_path_factory.mktemp("access-log-repo"))
    log = tmp_path_factory.mktemp("access-log") / "errors.jsonl"
    server = start(root, log, 0.0)
    try:
        yield server, log
    finally:
        server.stop()


def lines(log: Path) -> list[dict[str, Any]]:
    text = log.read_text() if log.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


def line_for(log: Path, request_id: str) -> dict[str, Any]:
    found = eventually(
        lambda: [line for line in lines(log) if line["request_id"] == request_id], what=f"a line for {request_id}"
    )
    assert len(found) == 1, found
    return found[0]


def request(model: str, request_id: str, x: np.ndarray | None = None) -> inference_pb2.PredictRequest:
    x = np.ones((1, 4), np.float32) if x is None else x
    return inference_pb2.PredictRequest(model_name=model, id=request_id, inputs=[from_numpy("x", x)])


@pytest.fixture()
def stub(every_call: tuple[ServerThread, Path]) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(every_call[0].address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def test_an_ok_predict_is_logged_with_its_ids_outcome_sizes_and_timings(every_call, stub):
    _server, log = every_call
    message = request("scale", "ok-1", np.ones((3, 4), np.float32))
    metadata = (("x-request-id", "mesh-id-1"), ("traceparent", TRACEPARENT))
    reply = stub.Predict(message, metadata=metadata, timeout=10)
    line = line_for(log, "ok-1")
    assert tuple(line) == FIELDS
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    assert line["x_request_id"] == "mesh-id-1"
    assert line["trace_id"] == TRACE_ID  # tracing is off: the caller's trace id, for correlation
    assert line["principal"] is None
    assert (line["method"], line["model"], line["version"], line["code"]) == ("Predict", "scale", 1, "OK")
    assert line["message"] is None
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert (line["bytes_in"], line["bytes_out"]) == (message.ByteSize(), reply.ByteSize())
    assert line["duration_ms"] > 0
    assert line["batch_rows"] == 3 and isinstance(line["batch_id"], int)
    assert line["queue_ms"] == 0  # a model without dynamic batching never queues


async def test_requests_sharing_a_batch_name_the_same_batch_and_its_rows(every_call):
    server, log = every_call
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        calls = [stub.Predict(request("held2", f"batched-{i}"), timeout=10) for i in range(2)]
        await asyncio.gather(*calls)
    first, second = (line_for(log, f"batched-{i}") for i in range(2))
    assert first["batch_id"] == second["batch_id"]
    assert first["batch_rows"] == second["batch_rows"] == 2
    assert (first["model"], first["version"]) == ("held2", 3)
    assert all(line["queue_ms"] >= 0 and line["queue_ms"] <= line["duration_ms"] for line in (first, second))


def test_a_predict_stream_is_logged_once_with_every_message_counted(every_call, stub):
    _server, log = every_call
    message = inference_pb2.PredictStreamRequest(
        model_name="scale", id="stream-1", chunk_rows=1, inputs=[from_numpy("x", np.ones((3, 4), np.float32))]
    )
    replies = list(stub.PredictStream(message, timeout=10))
    assert len(replies) == 3
    line = line_for(log, "stream-1")
    assert (line["method"], line["code"], line["model"]) == ("PredictStream", "OK", "scale")
    assert line["bytes_in"] == message.ByteSize()
    assert line["bytes_out"] == sum(reply.ByteSize() for reply in replies)


def test_failures_are_logged_with_their_code_and_message(every_call, stub):
    _server, log = every_call
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Predict(request("no_such_model", "unknown-1"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    line = line_for(log, "unknown-1")
    assert (line["code"], line["model"], line["version"], line["batch_id"]) == (
        "NOT_FOUND",
        "no_such_model",
        None,
        None,
    )
    assert "no_such_model" in line["message"]


def test_no_payload_parameter_or_metadata_value_reaches_a_line(every_call, stub):
    _server, log = every_call
    message = request("scale", "private-1")
    message.parameters["note"].CopyFrom(tensor_pb2.Parameter(string_param=SECRETS[0]))
    message.routing_key = SECRETS[1]
    metadata = (("x-custom", SECRETS[2]), ("authorization", f"Bearer {SECRETS[3]}"))
    stub.Predict(message, metadata=metadata, timeout=10)
    failing = request("scale", "private-2", np.ones((1, 4), np.int32))
    failing.routing_key = SECRETS[1]
    with pytest.raises(grpc.RpcError):
        stub.Predict(failing, metadata=metadata, timeout=10)
    line_for(log, "private-1")
    line_for(log, "private-2")
    text = log.read_text()
    assert not [secret for secret in SECRETS if secret in text]


@pytest.fixture()
def errors_stub(errors_only: tuple[ServerThread, Path]) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(errors_only[0].address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def test_at_sample_rate_zero_every_failure_and_no_ok_call_is_logged(errors_only, errors_stub):
    _server, log = errors_only
    for i in range(20):
        errors_stub.Predict(request("scale", f"quiet-{i}"), timeout=10)
    with pytest.raises(grpc.RpcError) as unknown:
        errors_stub.Predict(request("missing", "err-not-found"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        errors_stub.Predict(request("scale", "err-bad-tensor", np.ones((1, 5), np.float32)), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert line_for(log, "err-not-found")["code"] == "NOT_FOUND"
    invalid = line_for(log, "err-bad-tensor")
    assert (invalid["code"], invalid["model"], invalid["version"]) == ("INVALID_ARGUMENT", "scale", 1)
    assert invalid["message"]
    # both failures came after the OK calls, and lines keep call order: the OK calls were never logged
    assert [line["request_id"] for line in lines(log)] == ["err-not-found", "err-bad-tensor"]


def test_at_sample_rate_one_every_call_is_logged(every_call, stub):
    _server, log = every_call
    for i in range(20):
        stub.Predict(request("scale", f"all-{i}"), timeout=10)
    for i in range(20):
        assert line_for(log, f"all-{i}")["code"] == "OK"


def test_options_are_checked_when_made(tmp_path):
    for rate in (-0.1, 1.5, float("nan")):
        with pytest.raises(AccessLogError, match="from 0 to 1"):
            AccessLogOptions(tmp_path / "a.jsonl", sample_rate=rate)
    with pytest.raises(AccessLogError, match="cannot write the access log"):
        AccessLog(AccessLogOptions(tmp_path / "no" / "such" / "folder" / "a.jsonl"))
    with pytest.raises(AccessLogError, match="cannot write the access log"):
        AccessLog(AccessLogOptions(tmp_path))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    root = build_repository(tmp_path_factory.mktemp("access-log-repo"))
    log = tmp_path_factory.mktemp("access-log") / "traced.jsonl"
    options = TelemetryOptions(
        access_log=AccessLogOptions(str(log)), tracing=TracingOptions(exporters=("console",), schedule_delay_ms=50)
    )
    server = ServerThread(root, telemetry=options).start()
    try:
        yield server, log
    finally:
        server.stop()


def test_with_tracing_on_a_line_carries_the_trace_id_of_its_call(traced) -> None:
    server, log = traced
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    with grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        stub.Predict(request("scale", "root"), timeout=10)
        stub.Predict(request("scale", "child"), metadata=(("traceparent", TRACEPARENT),), timeout=10)
        stub.Predict(request("scale", "unsampled"), metadata=(("traceparent", unsampled),), timeout=10)
    root = line_for(log, "root")["trace_id"]
    assert len(root) == 32 and int(root, 16)  # the server span's own trace: there was no caller's
    assert line_for(log, "child")["trace_id"] == TRACE_ID
    assert line_for(log, "unsampled")["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # no span: the caller's id


def test_each_request_of_an_oip_stream_is_logged_as_its_own_call(every_call):
    """ModelStreamInfer: one line per streamed request (its id, outcome and sizes), as for ModelInfer."""
    from inferd.oip.v2 import grpc_service_pb2 as oip_pb2

    server, log = every_call

    def streamed(model: str, request_id: str) -> oip_pb2.ModelInferRequest:
        message = oip_pb2.ModelInferRequest(model_name=model, id=request_id)
        message.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
        return message

    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=oip_pb2.ModelStreamInferResponse.FromString,
        )
        requests = [streamed("scale", "oip-s1"), streamed("scale", "oip-s2"), streamed("nope", "oip-s3")]
        replies = {r.infer_response.id: r for r in call(iter(requests), timeout=10)}
    assert set(replies) == {"oip-s1", "oip-s2", "oip-s3"}
    for request_id in ("oip-s1", "oip-s2"):
        line = line_for(log, request_id)
        assert (line["method"], line["model"], line["version"], line["code"]) == ("ModelStreamInfer", "scale", 1, "OK")
        assert line["bytes_out"] == replies[request_id].ByteSize()
    failed = line_for(log, "oip-s3")
    assert (failed["method"], failed["code"]) == ("ModelStreamInfer", "NOT_FOUND")
