"""Traces from a real server into a real OTLP receiver: W3C context in, server/queue/compute/batch spans out.

The receiver is the collector's own gRPC service (``opentelemetry-proto``) running in this process; the
server exports to it over OTLP/gRPC. Each test stops its server before reading what arrived: shutdown
flushes the span processor, so nothing here waits on the exporter's timer. Batches of a known size come
from the ``INFERD_TEST_HOLD_UNTIL_QUEUED`` hook (server/models/test_hooks.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider

from inferd import AsyncClient, Client
from inferd.errors import NotFound
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc
from server.models.test_hooks import HOLD_UNTIL_QUEUED_ENV
from server.telemetry.options import TelemetryOptions
from server.telemetry.tracing import TracingOptions
from tests.otlp_receiver import OtlpReceiver, attributes, otlp_receiver
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

Span = trace_pb2.Span
PREDICT = "inferd.v1.InferenceService/Predict"

BATCHED_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
dynamic_batching { }
"""


@pytest.fixture()
def receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    with otlp_receiver() as found:
        yield found


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("tracing-repo")
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "batched", BATCHED_CONFIG, {1: scale_model(3)})
    write_model(root, "held4", BATCHED_CONFIG, {1: scale_model(4)})
    return root


@contextmanager
def traced_server(repo: Path, endpoint: str, **tracing: Any) -> Iterator[ServerThread]:
    """A server exporting to ``endpoint``; leaving the block stops it, which flushes every span."""
    options = TelemetryOptions(tracing=TracingOptions(endpoint=endpoint, **tracing))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(HOLD_UNTIL_QUEUED_ENV, "held4=4")
        with ServerThread(repo, telemetry=options) as server:
            yield server


def new_ids() -> tuple[int, int]:
    return random.getrandbits(128) or 1, random.getrandbits(64) or 1


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def ids(span: Span) -> tuple[int, int]:
    return int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big")


def request(model: str, rows: int = 1) -> inference_pb2.PredictRequest:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    return inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy("x", x)])


def only(spans: list[Span], name: str, trace_id: int | None = None) -> Span:
    found = [s for s in spans if s.name == name and (trace_id is None or ids(s)[0] == trace_id)]
    assert len(found) == 1, f"{len(found)} {name!r} spans in {[s.name for s in spans]}"
    return found[0]


def children(spans: list[Span], parent: Span) -> dict[str, Span]:
    return {s.name: s for s in spans if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id}


def test_server_span_continues_the_callers_trace_with_queue_and_compute_children(
    repo: Path, receiver: tuple[OtlpReceiver, str]
) -> None:
    collector, endpoint = receiver
    trace_id, parent_id = new_ids()
    metadata = [
        ("traceparent", traceparent(trace_id, parent_id)),
        ("tracestate", "vendor=abc"),
        ("baggage", "tenant=acme"),
    ]
    with traced_server(repo, endpoint) as server, Client(server.address, metadata=metadata) as client:
        client.predict("batched", {"x": np.ones((2, 4), np.float32)}, request_id="req-42")

    spans = collector.spans()
    server_span = only(spans, PREDICT, trace_id)
    assert server_span.parent_span_id == parent_id.to_bytes(8, "big")
    assert server_span.kind == Span.SPAN_KIND_SERVER
    assert server_span.trace_state == "vendor=abc"
    attrs = attributes(server_span)
    assert attrs["inferd.model"] == "batched"
    assert attrs["inferd.version"] == 1
    assert attrs["inferd.request_id"] == "req-42"
    assert attrs["rpc.grpc.status_code"] == 0
    assert attrs["rpc.system"] == "grpc"
    assert attrs["rpc.method"] == "Predict"
    assert attrs["baggage.tenant"] == "acme"
    assert server_span.status.code != trace_pb2.Status.STATUS_CODE_ERROR

    parts = children(spans, server_span)
    assert set(parts) == {"queue", "compute"}
    queue, compute = parts["queue"], parts["compute"]
    assert server_span.start_time_unix_nano <= queue.start_time_unix_nano <= queue.end_time_unix_nano
    assert queue.end_time_unix_nano == compute.start_time_unix_nano
    assert compute.start_time_unix_nano <= compute.end_time_unix_nano <= server_span.end_time_unix_nano
    assert attributes(compute)["inferd.batch_id"] == attrs["inferd.batch_id"]
    assert attributes(compute)["inferd.batch_rows"] == 2

    batch = only(spans, "batch")
    assert [ids(link) for link in [*batch.links]] == [
        (int.from_bytes(server_span.trace_id, "big"), ids(server_span)[1])
    ]
    assert attributes(batch)["inferd.batch_id"] == attrs["inferd.batch_id"]
    assert ids(batch)[0] != trace_id  # its own trace: linked, not a child of one caller
    assert [link.span_id for link in compute.links] == [batch.span_id]
    assert {"service.name": "inferd"}.items() <= collector.resources()[0].items()


async def test_one_batch_span_is_linked_to_every_request_of_a_batch_of_four(
    repo: Path, receiver: tuple[OtlpReceiver, str]
) -> None:
    collector, endpoint = receiver
    callers = [new_ids() for _ in range(4)]
    with traced_server(repo, endpoint) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await asyncio.gather(
                *(
                    stub.Predict(request("held4"), metadata=[("traceparent", traceparent(*caller))], timeout=30)
                    for caller in callers
                )
            )

    spans = collector.spans()
    server_spans = [only(spans, PREDICT, trace_id) for trace_id, _ in callers]
    for span, (_trace_id, parent_id) in zip(server_spans, callers, strict=True):
        assert span.parent_span_id == parent_id.to_bytes(8, "big")
    batch = only(spans, "batch")
    assert sorted(ids(link) for link in batch.links) == sorted(ids(span) for span in server_spans)
    batch_attrs = attributes(batch)
    assert batch_attrs["inferd.batch_requests"] == 4
    assert batch_attrs["inferd.batch_rows"] == 4
    assert batch_attrs["inferd.model"] == "held4"
    for span in server_spans:
        assert attributes(span)["inferd.batch_id"] == batch_attrs["inferd.batch_id"]
        parts = children(spans, span)
        assert set(parts) == {"queue", "compute"}
        assert (parts["compute"].start_time_unix_nano, parts["compute"].end_time_unix_nano) == (
            batch.start_time_unix_nano,
            batch.end_time_unix_nano,
        )
        assert [link.span_id for link in parts["compute"].links] == [batch.span_id]


def test_a_call_whose_caller_did_not_sample_exports_no_spans(repo: Path, receiver: tuple[OtlpReceiver, str]) -> None:
    collector, endpoint = receiver
    unsampled, sampled = new_ids(), new_ids()
    with traced_server(repo, endpoint) as server:
        with Client(server.address, metadata=[("traceparent", traceparent(*unsampled, sampled=False))]) as client:
            client.predict("batched", {"x": np.ones((1, 4), np.float32)})
        with Client(server.address, metadata=[("traceparent", traceparent(*sampled))]) as client:
            client.predict("batched", {"x": np.ones((1, 4), np.float32)})

    spans = collector.spans()
    assert not [s for s in spans if ids(s)[0] == unsampled[0]]
    server_span = only(spans, PREDICT, sampled[0])
    assert {s.name for s in spans} == {PREDICT, "queue", "compute", "batch"}
    assert [ids(link) for link in only(spans, "batch").links] == [ids(server_span)]


def test_the_sampler_decides_for_calls_without_a_parent_and_parents_decide_for_theirs(
    repo: Path, receiver: tuple[OtlpReceiver, str]
) -> None:
    collector, endpoint = receiver
    caller = new_ids()
    with traced_server(repo, endpoint, sampler="parentbased_traceidratio", sampler_arg=0.0) as server:
        with Client(server.address) as client:
            for _ in range(20):
                client.predict("scale", {"x": np.ones((1, 4), np.float32)})
        with Client(server.address, metadata=[("traceparent", traceparent(*caller))]) as client:
            client.predict("scale", {"x": np.ones((1, 4), np.float32)})

    spans = collector.spans()
    assert {ids(s)[0] for s in spans if s.name == PREDICT} == {caller[0]}
    assert set(children(spans, only(spans, PREDICT))) == {"queue", "compute"}  # unbatched models too


def test_a_failed_call_has_an_error_status_with_its_message(repo: Path, receiver: tuple[OtlpReceiver, str]) -> None:
    collector, endpoint = receiver
    caller = new_ids()
    metadata = [("traceparent", traceparent(*caller))]
    with (
        traced_server(repo, endpoint) as server,
        Client(server.address, metadata=metadata) as client,
        pytest.raises(NotFound),
    ):
        client.predict("no_such_model", {"x": np.ones((1, 4), np.float32)})

    span = only(collector.spans(), PREDICT, caller[0])
    assert span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert "NOT_FOUND" in span.status.message and "no_such_model" in span.status.message
    assert attributes(span)["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not children(collector.spans(), span)


async def test_the_sdk_client_propagates_the_current_span(repo: Path, receiver: tuple[OtlpReceiver, str]) -> None:
    collector, endpoint = receiver
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    with traced_server(repo, endpoint) as server:
        with tracer.start_as_current_span("sync caller") as sync_span, Client(server.address) as client:
            client.predict("scale", {"x": np.ones((1, 4), np.float32)})
            chunks = list(client.predict_stream("scale", {"x": np.ones((2, 4), np.float32)}, chunk_rows=1))
            assert len(chunks) == 2
        async with AsyncClient(server.address) as aclient:
            with tracer.start_as_current_span("async caller") as async_span:
                await aclient.predict("scale", {"x": np.ones((1, 4), np.float32)})
        with Client(server.address) as client:  # no current span: the server starts a trace of its own
            client.predict("scale", {"x": np.ones((1, 4), np.float32)})

    spans = collector.spans()
    for caller, names in ((sync_span, {PREDICT, "inferd.v1.InferenceService/PredictStream"}), (async_span, {PREDICT})):
        context = caller.get_span_context()
        joined = [s for s in spans if ids(s)[0] == context.trace_id and s.kind == Span.SPAN_KIND_SERVER]
        assert {s.name for s in joined} == names
        assert all(s.parent_span_id == context.span_id.to_bytes(8, "big") for s in joined)
    roots = [s for s in spans if s.name == PREDICT and not s.parent_span_id]
    assert len(roots) == 1


def test_without_tracing_configured_no_call_observer_is_installed(repo: Path) -> None:
    caller = new_ids()
    with ServerThread(repo) as server, Client(server.address, metadata=[("traceparent", traceparent(*caller))]) as c:
        assert c.predict("scale", {"x": np.ones((1, 4), np.float32)})["y"].shape == (1, 4)
        assert server.server is not None
        assert not server.server.telemetry.observers
        assert not server.server.servicer.observers
