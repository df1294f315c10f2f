"""Dynamic batching on a real server, made deterministic with the hold_until_queued test hook.

The hook is test-only: it is set through the environment (INFERD_TEST_HOLD_UNTIL_QUEUED, see
server/models/test_hooks.py) before the server starts, never in config.pbtxt. The probe model answers,
for every row, the id of the engine call that ran it and that call's size, so batch composition is read
from the responses themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from server.models.test_hooks import HOLD_UNTIL_QUEUED_ENV
from tests.support import PROBE_MODEL, ServerThread, eventually_async, write_model


def probe_config(batching: str, max_batch_size: int = 8) -> str:
    return f"""
max_batch_size: {max_batch_size}
input {{ name: "x" data_type: DATA_TYPE_FP32 dims: [-1, -1] }}
output {{ name: "y" data_type: DATA_TYPE_FP32 dims: [-1, -1] }}
output {{ name: "call" data_type: DATA_TYPE_INT64 dims: [-1, 1] }}
output {{ name: "batch_rows" data_type: DATA_TYPE_INT64 dims: [-1, 1] }}
dynamic_batching {{ {batching} }}
"""


MODELS = {
    "held4": probe_config(""),
    "held3_max4": probe_config("", max_batch_size=4),
    "held3": probe_config(""),
    "held2": probe_config(""),
    "preferred": probe_config(
        "always_wait_for_window: true max_queue_delay_microseconds: 60000000 preferred_batch_sizes: [4]"
    ),
    "bounded": probe_config("max_queue_size: 2"),
    "queue_timeout": probe_config("default_timeout_microseconds: 100000"),
    "prioritised": probe_config("priority_levels: 2 default_priority_level: 2", max_batch_size=1),
    "eager": probe_config("max_queue_delay_microseconds: 60000000"),
}

#: the test hook, per model: its queue stays closed until this many requests wait
HOLD_UNTIL_QUEUED = {
    "held4": 4,
    "held3_max4": 3,
    "held3": 3,
    "held2": 2,
    "bounded": 100,
    "queue_timeout": 100,
    "prioritised": 4,
    "vocab": 9,
}

VOCAB = 16
VOCAB_CONFIG = """
max_batch_size: 16
input { name: "input_ids" data_type: DATA_TYPE_INT64 dims: [-1, 4] }
output { name: "pooled" data_type: DATA_TYPE_FP32 dims: [-1, 3] }
dynamic_batching { }
"""


def vocab_table() -> np.ndarray:
    return np.arange(VOCAB * 3, dtype=np.float32).reshape(VOCAB, 3)


def write_vocab_model(root: Path) -> None:
    """A text-encoder-like ONNX model: token ids -> embedding lookup (Gather) -> sum over the sequence.

    onnxruntime refuses an id outside the table with INVALID_ARGUMENT, like the example text_encoder.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["embedded"], axis=0),
            helper.make_node("ReduceSum", ["embedded", "axis"], ["pooled"], keepdims=0),
        ],
        "vocab",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(vocab_table(), "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_model(root, "vocab", VOCAB_CONFIG)
    (root / "vocab" / "1").mkdir()
    (root / "vocab" / "1" / "model.onnx").write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("batching-repo")
    for name, config in MODELS.items():
        write_model(root, name, config, {1: PROBE_MODEL})
    write_vocab_model(root)
    with pytest.MonkeyPatch.context() as env:  # set while the server lives: a config reload reads it again
        env.setenv(HOLD_UNTIL_QUEUED_ENV, ",".join(f"{model}={n}" for model, n in HOLD_UNTIL_QUEUED.items()))
        with ServerThread(root) as server:
            yield server


@pytest.fixture()
async def stub(batching_server: ServerThread) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with grpc.aio.insecure_channel(batching_server.address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def request(model: str, x: np.ndarray, **params: int) -> inference_pb2.PredictRequest:
    message = inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy("x", x)])
    for key, value in params.items():
        message.parameters[key].CopyFrom(tensor_pb2.Parameter(int64_param=value))
    return message


def rows_for(caller: int, rows: int, width: int = 4) -> np.ndarray:
    """Inputs unique to each caller, so a response with someone else's rows is caught."""
    return (caller * 1000 + np.arange(rows * width, dtype=np.float32)).reshape(rows, width)


def decode(reply: inference_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {t.name: to_numpy(t) for t in reply.outputs}


def check_own_rows(reply: inference_pb2.PredictResponse, x: np.ndarray) -> tuple[int, int]:
    """Assert the reply holds exactly this caller's rows; return (call id, batch rows)."""
    out = decode(reply)
    np.testing.assert_array_equal(out["y"], x * 2)
    assert out["call"].shape == (x.shape[0], 1)
    assert len(set(out["call"].ravel())) == 1
    return int(out["call"][0, 0]), int(out["batch_rows"][0, 0])


async def statistics(stub: inference_pb2_grpc.InferenceServiceStub, model: str) -> inference_pb2.VersionStatistics:
    reply = await stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=model), timeout=5)
    return reply.statistics[0]


@pytest.fixture()
def counters(batching_server: ServerThread) -> Iterator[Callable[[str], inference_pb2.VersionStatistics]]:
    """Reads a model's own counters from the server synchronously (for ``eventually_async`` conditions)."""
    with grpc.insecure_channel(batching_server.address) as channel:
        sync_stub = inference_pb2_grpc.InferenceServiceStub(channel)

        def read(model: str) -> inference_pb2.VersionStatistics:
            request = inference_pb2.ModelStatisticsRequest(name=model)
            return sync_stub.ModelStatistics(request, timeout=5).statistics[0]

        yield read


async def wait_for(
    counters: Callable[[str], inference_pb2.VersionStatistics],
    model: str,
    condition: Callable[[inference_pb2.VersionStatistics], bool],
) -> inference_pb2.VersionStatistics:
    """Until the server's own counters satisfy ``condition`` (the server tells us, no guessing)."""

    def check() -> inference_pb2.VersionStatistics | None:
        stats = counters(model)
        return stats if condition(stats) else None

    return await eventually_async(check, what=f"a condition on the statistics of '{model}'")


async def test_concurrent_requests_form_one_batch_with_each_caller_getting_its_own_rows(stub):
    xs = [rows_for(i, 2) for i in range(4)]
    replies = await asyncio.gather(*(stub.Predict(request("held4", x), timeout=10) for x in xs))
    calls = {check_own_rows(reply, x) for reply, x in zip(replies, xs, strict=True)}
    assert len(calls) == 1
    (_call, batch_rows) = calls.pop()
    assert batch_rows == 8


async def test_batches_never_exceed_max_batch_size(stub):
    xs = [rows_for(i, 2) for i in range(3)]
    replies = await asyncio.gather(*(stub.Predict(request("held3_max4", x), timeout=10) for x in xs))
    seen = [check_own_rows(reply, x) for reply, x in zip(replies, xs, strict=True)]
    sizes = sorted(rows for _call, rows in set(seen))
    assert sizes == [2, 4]
    stats = await statistics(stub, "held3_max4")
    assert stats.execution_count == 2 and stats.inference_count == 6
    assert {b.batch_size: b.count for b in stats.batch_sizes} == {2: 1, 4: 1}


async def test_mixed_shapes_never_share_a_batch(stub):
    xs = [rows_for(0, 1, width=4), rows_for(1, 1, width=3), rows_for(2, 1, width=4), rows_for(3, 1, width=3)]
    replies = await asyncio.gather(*(stub.Predict(request("held4", x), timeout=10) for x in xs))
    seen = [check_own_rows(reply, x) for reply, x in zip(replies, xs, strict=True)]
    assert seen[0][0] == seen[2][0] and seen[1][0] == seen[3][0]
    assert seen[0][0] != seen[1][0]
    assert {rows for _call, rows in seen} == {2}


async def test_preferred_batch_size_dispatches_without_waiting_for_the_window(stub):
    # The window is 60 s: a reply within the 10 s timeout proves the preferred size ran at once.
    x = rows_for(0, 4)
    reply = await stub.Predict(request("preferred", x), timeout=10)
    assert check_own_rows(reply, x)[1] == 4
    xs = [rows_for(1, 2), rows_for(2, 2)]
    replies = await asyncio.gather(*(stub.Predict(request("preferred", x), timeout=10) for x in xs))
    assert {check_own_rows(r, x) for r, x in zip(replies, xs, strict=True)}.__len__() == 1


async def test_lone_request_is_not_held_by_the_window_when_the_engine_is_idle(stub):
    # "eager" has a 60 s max_queue_delay, but the default policy dispatches at once on an idle engine.
    x = rows_for(0, 1)
    reply = await stub.Predict(request("eager", x), timeout=10)
    assert check_own_rows(reply, x)[1] == 1


async def test_full_queue_rejects_with_resource_exhausted_naming_the_model_and_its_limit(stub, counters):
    waiting = [stub.Predict(request("bounded", rows_for(i, 1)), timeout=30) for i in range(2)]
    tasks = [asyncio.ensure_future(call) for call in waiting]
    await wait_for(counters, "bounded", lambda s: s.queue_depth == 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request("bounded", rows_for(9, 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "model 'bounded' queue is full (2 requests waiting, its max_queue_size)" in info.value.details()
    for task in tasks:
        task.cancel()
    await wait_for(counters, "bounded", lambda s: s.queue_depth == 0)
    stats = await statistics(stub, "bounded")
    assert stats.execution_count == 0


async def test_expired_request_never_reaches_the_engine_and_gets_deadline_exceeded(stub, counters):
    doomed = asyncio.ensure_future(stub.Predict(request("held2", rows_for(0, 1)), timeout=1.0))
    await wait_for(counters, "held2", lambda s: s.queue_depth == 1)  # the server holds it (the hook waits for 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await doomed
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(counters, "held2", lambda s: s.queue_depth == 0 and s.expired_before_run == 1)
    xs = [rows_for(1, 1), rows_for(2, 1)]
    replies = await asyncio.gather(*(stub.Predict(request("held2", x), timeout=10) for x in xs))
    seen = {check_own_rows(r, x) for r, x in zip(replies, xs, strict=True)}
    assert len(seen) == 1 and seen.pop()[1] == 2  # one engine call holding exactly the two live rows
    stats = await statistics(stub, "held2")
    assert stats.execution_count == 1 and stats.inference_count == 2


async def test_queue_timeout_answers_deadline_exceeded_without_running(stub):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request("queue_timeout", rows_for(0, 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline expired while queued for model 'queue_timeout'" in info.value.details()
    stats = await statistics(stub, "queue_timeout")
    assert stats.execution_count == 0 and stats.expired_before_run == 1
    assert stats.failure_count["DEADLINE_EXCEEDED"] == 1


async def test_cancelling_one_caller_of_a_held_batch_leaves_the_others_answered(stub, counters):
    first = stub.Predict(request("held3", rows_for(0, 1)), timeout=30)
    first_task = asyncio.ensure_future(first)
    kept_x = rows_for(1, 1)
    kept = asyncio.ensure_future(stub.Predict(request("held3", kept_x), timeout=30))
    await wait_for(counters, "held3", lambda s: s.queue_depth == 2)
    first.cancel()
    await wait_for(counters, "held3", lambda s: s.queue_depth == 1 and s.cancelled_before_run == 1)
    xs = [rows_for(2, 1), rows_for(3, 1)]
    replies = await asyncio.gather(kept, *(stub.Predict(request("held3", x), timeout=10) for x in xs))
    seen = {check_own_rows(r, x) for r, x in zip(replies, [kept_x, *xs], strict=True)}
    assert len(seen) == 1 and seen.pop()[1] == 3
    with pytest.raises(asyncio.CancelledError):
        await first_task


async def test_priorities_order_execution(stub, counters):
    low = [rows_for(i, 1) for i in range(2)]
    high = [rows_for(10 + i, 1) for i in range(2)]
    low_calls = [asyncio.ensure_future(stub.Predict(request("prioritised", x), timeout=10)) for x in low]
    await wait_for(counters, "prioritised", lambda s: s.queue_depth == 2)
    high_calls = [stub.Predict(request("prioritised", x, priority=1), timeout=10) for x in high]
    high_replies = await asyncio.gather(*high_calls)
    low_replies = await asyncio.gather(*low_calls)
    high_ids = sorted(check_own_rows(r, x)[0] for r, x in zip(high_replies, high, strict=True))
    low_ids = sorted(check_own_rows(r, x)[0] for r, x in zip(low_replies, low, strict=True))
    assert max(high_ids) < min(low_ids)


async def test_out_of_range_priority_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(request("prioritised", rows_for(0, 1), priority=5), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'priority'" in info.value.details() and "1 to 2" in info.value.details()


async def test_one_out_of_vocabulary_request_fails_alone_and_its_batch_mates_get_answers(stub):
    good = [np.array([[i % VOCAB, 1, 2, 3]], dtype=np.int64) for i in range(8)]
    bad = np.array([[1, 2, VOCAB + 100, 3]], dtype=np.int64)
    messages = [
        inference_pb2.PredictRequest(model_name="vocab", inputs=[from_numpy("input_ids", x)])
        for x in [*good[:5], bad, *good[5:]]
    ]
    results = await asyncio.gather(*(stub.Predict(m, timeout=30) for m in messages), return_exceptions=True)
    failed = results.pop(5)
    assert isinstance(failed, grpc.aio.AioRpcError), failed
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model 'vocab'" in failed.details() and str(VOCAB + 100) in failed.details()
    table = vocab_table()
    for reply, x in zip(results, good, strict=True):
        assert isinstance(reply, inference_pb2.PredictResponse), reply
        np.testing.assert_allclose(decode(reply)["pooled"], table[x].sum(axis=1))
    stats = await statistics(stub, "vocab")
    assert {b.batch_size: b.count for b in stats.batch_sizes} == {9: 1, 1: 9}  # the batch, then each alone
