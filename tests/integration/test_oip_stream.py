"""ModelStreamInfer: many requests on one bidirectional stream, answered as each completes, with flow control.

Driven with inferd's own generated OIP stubs (inferd.oip.v2); the tritonclient suite is
tests/e2e/test_oip_tritonclient.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from inferd.v1 import inference_pb2, inference_pb2_grpc
from server.api.oip import stream as oip_stream
from tests.integration import oip_gate
from tests.support import ServerThread, eventually_async, write_model

DOUBLE = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}
"""

HELD = """
import numpy as np
from tests.integration import oip_gate

class Model:
    def infer(self, inputs):
        oip_gate.GATE.wait(30)
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}
"""

COUNTER = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        start = int(np.asarray(inputs["start"]).reshape(-1)[0])
        for i in range(int(parameters.get("count", 3))):
            yield {"n": np.array([start + i], dtype=np.int64)}
"""

BATCHED = """
max_batch_size: 64
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 2] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 2] }
dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_sizes: [8] always_wait_for_window: true }
"""

COUNTER_CONFIG = """
max_batch_size: 0
input { name: "start" data_type: DATA_TYPE_INT64 dims: [1] }
output { name: "n" data_type: DATA_TYPE_INT64 dims: [1] }
"""
IN_FLIGHT = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root: Path = tmp_path_factory.mktemp("oip_stream")
    write_model(root, "double", BATCHED, {1: DOUBLE})
    write_model(root, "held", BATCHED.replace("preferred_batch_sizes: [8]", ""), {1: HELD})
    write_model(root, "counter", COUNTER_CONFIG, {1: COUNTER})
    mp = pytest.MonkeyPatch()
    mp.setattr(oip_stream, "MAX_IN_FLIGHT", IN_FLIGHT)
    oip_gate.GATE.set()
    try:
        with ServerThread(root) as thread:
            yield thread
    finally:
        oip_gate.GATE.set()
        mp.undo()


def infer_request(model: str, x: np.ndarray, request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return request


def counter_request(start: int, count: int, request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="counter", id=request_id)
    request.inputs.add(name="start", datatype="INT64", shape=[1])
    request.raw_input_contents.append(np.array([start], dtype="<i8").tobytes())
    request.parameters["count"].int64_param = count
    return request


async def _send_all(requests: list[pb.ModelInferRequest]) -> AsyncIterator[pb.ModelInferRequest]:
    for request in requests:
        yield request


async def test_requests_on_one_stream_share_batches_and_are_matched_by_id(server: ServerThread) -> None:
    xs = {f"r{i}": np.array([[i, -i]], dtype=np.float32) for i in range(8)}
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(_send_all([infer_request("double", x, i) for i, x in xs.items()]), timeout=30)
        replies = [reply async for reply in call]
        stats = await inference_pb2_grpc.InferenceServiceStub(channel).ModelStatistics(
            inference_pb2.ModelStatisticsRequest(name="double")
        )
    assert [r.error_message for r in replies] == [""] * 8
    answers = {r.infer_response.id: r.infer_response for r in replies}
    assert set(answers) == set(xs)
    for request_id, answer in answers.items():
        y = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(tuple(answer.outputs[0].shape))
        np.testing.assert_array_equal(y, xs[request_id] * 2)
    version = stats.statistics[0]
    assert version.success_count == 8
    assert version.execution_count < 8  # the eight streamed requests were batched together


async def test_a_failed_request_is_answered_with_its_error_and_the_stream_goes_on(server: ServerThread) -> None:
    good = [infer_request("double", np.ones((1, 2), np.float32), f"ok{i}") for i in range(3)]
    unknown = infer_request("no_such_model", np.ones((1, 2), np.float32), "lost")
    wrong = pb.ModelInferRequest(model_name="double", id="wrong")
    wrong.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([1, 2, 3])
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(_send_all([good[0], unknown, good[1], wrong, good[2]]), timeout=30)
        replies = {r.infer_response.id: r async for r in call}
    assert set(replies) == {"ok0", "ok1", "ok2", "lost", "wrong"}
    assert replies["lost"].error_message.startswith("NOT_FOUND: model 'no_such_model' not found")
    assert replies["wrong"].error_message.startswith("INVALID_ARGUMENT:")
    assert "'x'" in replies["wrong"].error_message
    assert all(not replies[f"ok{i}"].error_message for i in range(3))


async def test_a_client_sending_faster_than_the_model_is_not_read_beyond_the_in_flight_limit(
    server: ServerThread,
) -> None:
    slot = server.server.registry.route("held")  # type: ignore[union-attr]
    oip_gate.GATE.clear()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            call = stub.ModelStreamInfer(timeout=60)
            for i in range(40):
                await call.write(infer_request("held", np.full((1, 2), i, np.float32), f"h{i}"))
            await eventually_async(lambda: slot.in_flight == IN_FLIGHT, what="the in-flight limit reached")
            # a round trip on the same connection: the server's loop has had every chance to read more
            await stub.ServerLive(pb.ServerLiveRequest())
            assert slot.in_flight == IN_FLIGHT
            oip_gate.GATE.set()
            await call.done_writing()
            ids = [reply.infer_response.id async for reply in call]
    finally:
        oip_gate.GATE.set()
    assert sorted(ids) == sorted(f"h{i}" for i in range(40))


async def test_a_decoupled_model_answers_with_parts_and_marks_only_the_last_final(server: ServerThread) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(_send_all([counter_request(10, 3, "a"), counter_request(100, 2, "b")]))
        replies = [r async for r in call]
    assert not any(r.error_message for r in replies)
    values: dict[str, list[int]] = {"a": [], "b": []}
    finals: dict[str, list[bool]] = {"a": [], "b": []}
    for reply in replies:
        response = reply.infer_response
        if response.raw_output_contents:  # a generator's end is only known after its last item: like Triton's
            values[response.id].append(int(np.frombuffer(response.raw_output_contents[0], dtype="<i8")[0]))
        finals[response.id].append(response.parameters["triton_final_response"].bool_param)
    assert values == {"a": [10, 11, 12], "b": [100, 101]}
    for flags in finals.values():  # python backend, the final flag may come alone, in an empty last response
        assert flags[-1] is True
        assert not any(flags[:-1])


async def test_model_infer_on_a_decoupled_model_is_failed_precondition_naming_the_stream(server: ServerThread) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(counter_request(1, 2, "u"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ModelStreamInfer" in (caught.value.details() or "")


async def test_a_stream_that_ends_early_leaves_the_server_serving(server: ServerThread) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer()
        await call.write(counter_request(0, 1000, "long"))
        first = await call.read()
        assert first.infer_response.id == "long"
        call.cancel()
        await asyncio.sleep(0)
        again = await stub.ModelInfer(infer_request("double", np.ones((1, 2), np.float32), "after"))
    assert again.id == "after"
