"""Rate limits and the audit log against a real server with real tokens (``--auth-config`` and ``--audit-log``).

The acceptance case: a principal at 10 req/s with a burst of 5 sending 100 requests at once gets 5 OKs, the
rest RESOURCE_EXHAUSTED with a ``grpc-retry-pushback-ms`` trailer, and is served again after the refill.
Then: the open-stream cap, a gRPC retry policy that honours the pushback, and the audit log's lines for
control actions and denials (with no token anywhere in the file). The limiter's arithmetic on a fake clock
is tests/unit/test_rate_limits.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.security.audit import AuditLogOptions
from server.security.auth_config import parse_auth_config
from server.security.rate_limits import PUSHBACK_KEY
from server.security.tokens import hash_token, new_token
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

TICKER_MODEL = """
import time
import numpy as np

class Model:
    def infer(self, inputs):
        return {"n": np.asarray(inputs["start"], dtype=np.int64)}

    def infer_stream(self, inputs, parameters):
        for i in range(200):  # 10 s unless the client goes away
            yield {"n": np.array([i], dtype=np.int64)}
            time.sleep(0.05)
"""

TICKER_CONFIG = """
max_batch_size: 0
input { name: "start" data_type: DATA_TYPE_INT64 dims: [1] }
output { name: "n" data_type: DATA_TYPE_INT64 dims: [1] }
"""

TOKENS = {name: new_token() for name in ("alice", "streamer", "deployer", "patient")}

AUTH_CONFIG = """
tokens:
  - {{principal: alice, hash: "{alice}", roles: [caller]}}
  - {{principal: streamer, hash: "{streamer}", roles: [caller]}}
  - {{principal: deployer, hash: "{deployer}", roles: [caller, ops]}}
  - {{principal: patient, hash: "{patient}", roles: [caller]}}
roles:
  caller: {{predict: ["scale", "ticker"], read: ["*"]}}
  ops: {{control: true}}
rate_limits:
  default: {{requests_per_second: 1000, burst: 1000}}
  principals:
    alice: {{requests_per_second: 10, burst: 5}}
    patient: {{requests_per_second: 5, burst: 1}}
    streamer: {{requests_per_second: 1000, burst: 1000, max_streams: 1}}
"""


def bearer(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def predict_request() -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(model_name="scale", inputs=[from_numpy("x", np.ones((1, 4), dtype=np.float32))])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    root = tmp_path_factory.mktemp("rate-limit-repo")
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "ticker", TICKER_CONFIG, {1: TICKER_MODEL})
    work = tmp_path_factory.mktemp("rate-limit-config")
    config_path = work / "auth.yaml"
    config_path.write_text(AUTH_CONFIG.format(**{name: hash_token(token) for name, token in TOKENS.items()}))
    audit_path = work / "audit.jsonl"
    with ServerThread(
        root, auth=parse_auth_config(config_path.read_text(), config_path), audit_log=AuditLogOptions(audit_path)
    ) as running:
        yield running, audit_path


async def _burst(address: str, calls: int) -> tuple[list[Any], float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await channel.channel_ready()
        request = predict_request()

        async def one() -> Any:
            call = stub.Predict(request, metadata=bearer("alice"), timeout=30)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                return exc.code(), dict(exc.trailing_metadata() or ()), exc.details()
            return grpc.StatusCode.OK, {}, ""

        started = time.monotonic()
        outcomes = await asyncio.gather(*(one() for _ in range(calls)))
        return list(outcomes), time.monotonic() - started


def test_ten_per_second_burst_five_gets_five_oks_of_a_hundred_then_pushback_then_service_after_the_refill(
    server: tuple[ServerThread, Path],
) -> None:
    running, audit_path = server
    outcomes, elapsed = asyncio.run(_burst(running.address, 100))
    codes = [code for code, _, _ in outcomes]
    ok = codes.count(grpc.StatusCode.OK)
    refused = [
        (trailers, details) for code, trailers, details in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    # 5 from the burst; the bucket refills at 10/s while the 100 calls arrive, so a slow machine may see one more
    assert 5 <= ok <= 5 + int(elapsed * 10), (ok, elapsed)
    assert ok + len(refused) == 100, codes
    for trailers, details in refused:
        pushback = int(trailers[PUSHBACK_KEY])
        assert 0 < pushback <= 100  # ms until alice's next token
        assert "rate limit exceeded for principal 'alice'" in details
    wait_ms = max(int(trailers[PUSHBACK_KEY]) for trailers, _ in refused)
    time.sleep(wait_ms / 1000)  # the server said when a token is back: take it at its word
    with grpc.insecure_channel(running.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.Predict(predict_request(), metadata=bearer("alice"), timeout=10)
        assert reply.outputs[0].name == "y"
        # other principals have their own buckets: the deployer is served while alice is throttled
        for _ in range(10):
            stub.Predict(predict_request(), metadata=bearer("deployer"), timeout=10)

    def throttled() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
        return [line for line in lines if line["principal"] == "alice" and line["outcome"] == "RESOURCE_EXHAUSTED"]

    # the 95 refusals are audited, sampled: one line a second for alice, not 95
    logged = eventually(throttled, what="alice's rate-limit refusal in the audit log")
    assert len(logged) <= 1 + int(elapsed), logged
    assert logged[0]["action"] == "/inferd.v1.InferenceService/Predict" and logged[0]["source"] == "token"


def test_a_stream_beyond_max_streams_is_refused_and_the_place_comes_back_when_the_stream_ends(
    server: tuple[ServerThread, Path],
) -> None:
    running, _ = server
    request = inference_pb2.PredictRequest(
        model_name="ticker", inputs=[from_numpy("start", np.zeros(1, dtype=np.int64))]
    )
    with grpc.insecure_channel(running.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        first = stub.PredictStream(request, metadata=bearer("streamer"), timeout=30)
        next(first)  # open and streaming
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.PredictStream(request, metadata=bearer("streamer"), timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'streamer' already has 1 open stream" in refused.value.details()
        # another principal's streams are not counted against the streamer's cap
        other = stub.PredictStream(request, metadata=bearer("deployer"), timeout=30)
        next(other)
        other.cancel()
        first.cancel()

        def reopens() -> bool:
            stream = stub.PredictStream(request, metadata=bearer("streamer"), timeout=30)
            try:
                next(stream)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            stream.cancel()
            return True

        eventually(reopens, what="the streamer's place is free once its stream is cancelled")


def test_a_client_with_a_retry_policy_waits_for_the_pushback_and_succeeds(server: tuple[ServerThread, Path]) -> None:
    running, _ = server
    service_config = {
        "methodConfig": [
            {
                "name": [{"service": "inferd.v1.InferenceService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.001s",
                    "maxBackoff": "0.001s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
    options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(service_config))]
    with grpc.insecure_channel(running.address) as plain, grpc.insecure_channel(running.address, options) as retrying:
        inference_pb2_grpc.InferenceServiceStub(plain).Predict(predict_request(), metadata=bearer("patient"))
        with pytest.raises(grpc.RpcError) as refused:  # 5/s, burst 1: the bucket is empty now
            inference_pb2_grpc.InferenceServiceStub(plain).Predict(predict_request(), metadata=bearer("patient"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        started = time.monotonic()
        reply = inference_pb2_grpc.InferenceServiceStub(retrying).Predict(
            predict_request(), metadata=bearer("patient"), timeout=10
        )
        assert reply.outputs
        # the retry waited for the server's pushback (~200 ms), not the 1 ms backoff
        assert time.monotonic() - started >= 0.1


def test_control_actions_and_denials_are_audited_without_tokens(server: tuple[ServerThread, Path]) -> None:
    running, audit_path = server
    with grpc.insecure_channel(running.address) as channel:
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        deployer = (*bearer("deployer"), ("x-request-id", "audit-load-1"))
        admin.LoadModel(admin_pb2.LoadModelRequest(name="scale"), metadata=deployer, timeout=60)
        with pytest.raises(grpc.RpcError) as missing:  # a failed control action is audited with its status
            admin.UnloadModel(
                admin_pb2.UnloadModelRequest(name="ticker", version=7),
                metadata=(*bearer("deployer"), ("x-request-id", "audit-unload-1")),
                timeout=60,
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as denied:  # alice may predict, not control
            admin.LoadModel(
                admin_pb2.LoadModelRequest(name="scale"),
                metadata=(*bearer("alice"), ("x-request-id", "audit-denied-1")),
                timeout=10,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as unknown:
            admin.LoadModel(
                admin_pb2.LoadModelRequest(name="scale"),
                metadata=(("authorization", "Bearer not-a-real-token-4f1d"), ("x-request-id", "audit-unauth-1")),
                timeout=10,
            )
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED

    def by_id() -> dict[str, dict[str, Any]]:
        lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
        return {line["request_id"]: line for line in lines}

    eventually(lambda: "audit-unauth-1" in by_id(), what="the audit lines")
    lines = by_id()
    load = lines["audit-load-1"]
    assert load["principal"] == "deployer" and load["source"] == "token"
    assert load["action"] == "/inferd.v1.ModelService/LoadModel"
    assert load["target"] == {"model": "scale"} and load["outcome"] == "OK"
    assert load["peer"]
    unload = lines["audit-unload-1"]
    assert unload["target"] == {"model": "ticker", "version": 7} and unload["outcome"] == "NOT_FOUND"
    refused = lines["audit-denied-1"]
    assert (refused["principal"], refused["outcome"]) == ("alice", "PERMISSION_DENIED")
    assert refused["action"] == "/inferd.v1.ModelService/LoadModel"
    unauthenticated = lines["audit-unauth-1"]
    assert unauthenticated["principal"] is None and unauthenticated["outcome"] == "UNAUTHENTICATED"
    text = audit_path.read_text()
    for token in (*TOKENS.values(), "not-a-real-token-4f1d"):
        assert token not in text
    assert "Bearer" not in text
