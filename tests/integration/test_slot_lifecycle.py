"""A version's edges: engine calls outlive cancelled callers, the closing gate, the drain bound, inline vs thread.

These drive a real Slot (a python model loaded from a folder), or a real server, with the model's
calls held on threading events that the test reaches through ``slot.engine.model``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd.tensors import to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.core.errors import Unavailable
from server.core.types import SlotState
from server.models.config import load_config
from server.models.slot import Slot
from tests.support import ServerThread, eventually, eventually_async, write_model

#: a python model whose calls the test holds, and which records whether close() ran during an infer
HELD_MODEL = """
import threading
import numpy as np

class Model:
    thread_safe = True  # let two instances' calls run at once, as instance_count 2 promises

    def __init__(self):
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.running = 0
        self.close_saw_running = None
        self.threads = []

    def infer(self, inputs):
        self.running += 1
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        try:
            self.release.wait(30)
            return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}
        finally:
            self.running -= 1

    def close(self):
        self.close_saw_running = self.running
"""

HELD_CONFIG = """
max_batch_size: 8
instance_count: 2
execution: "thread"
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""

#: deadline-less infinite generator: a stream that only ends when the server ends it
ENDLESS_MODEL = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        i = 0
        while True:
            i += 1
            yield {"y": np.full((1, 4), i, dtype=np.float32)}
"""

ENDLESS_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


def _predict(name: str) -> inference_pb2.PredictRequest:
    request = inference_pb2.PredictRequest(model_name=name)
    request.inputs.add(name="x", data_type="DATA_TYPE_FP32", shape=[1, 4], fp32_contents=[1, 2, 3, 4])
    return request


async def _loaded_slot(tmp_path: Path, config: str, source: str) -> Slot:
    model_dir = write_model(tmp_path, "held", config, {1: source})
    slot = Slot(load_config(model_dir / "config.pbtxt", model_name="held"), 1, model_dir / "1")
    await slot.load()
    assert slot.ready, slot.reason
    return slot


def _x() -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 4), np.float32)}


async def test_unload_never_closes_an_engine_while_a_cancelled_callers_call_still_runs(tmp_path: Path) -> None:
    slot = await _loaded_slot(tmp_path, HELD_CONFIG, HELD_MODEL)
    model = slot.engine.model  # type: ignore[union-attr]
    model.release.clear()
    model.entered.clear()
    caller = asyncio.ensure_future(slot.infer(_x(), None))
    await eventually_async(model.entered.is_set, what="the call entered the engine")
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    assert slot.calls.running == 1  # the caller left; its engine call did not

    closing = asyncio.ensure_future(slot.drain_and_close("test", timeout=5))
    await eventually_async(lambda: slot.calls.closed, what="the drain reached closing the engine")
    await asyncio.sleep(0)
    assert model.close_saw_running is None, "the engine was closed while a call on it was still running"
    assert not closing.done()
    model.release.set()
    await asyncio.wait_for(closing, 10)
    assert model.close_saw_running == 0
    assert slot.state is SlotState.UNLOADED


async def test_a_request_arriving_after_the_drain_saw_the_slot_idle_is_refused_at_once(tmp_path: Path) -> None:
    config = HELD_CONFIG + "dynamic_batching { max_queue_delay_microseconds: 10000000 always_wait_for_window: true }\n"
    slot = await _loaded_slot(tmp_path, config, HELD_MODEL)
    model = slot.engine.model  # type: ignore[union-attr]
    close_started = threading.Event()
    finish_close = threading.Event()

    def slow_close() -> None:
        close_started.set()
        finish_close.wait(10)

    model.close = slow_close
    closing = asyncio.ensure_future(slot.drain_and_close("test", timeout=5))
    await eventually_async(close_started.is_set, what="the engine began closing")
    with pytest.raises(Unavailable, match="held' version 1 is unloading"):
        await asyncio.wait_for(slot.infer(_x(), None), 1.0)  # would sit out a 10 s window in a closed batcher
    finish_close.set()
    await asyncio.wait_for(closing, 10)
    assert slot.in_flight == 0 and slot.batcher is not None and slot.batcher.queued == 0


async def test_auto_execution_never_goes_inline_while_an_executor_call_is_outstanding(tmp_path: Path) -> None:
    slot = await _loaded_slot(tmp_path, HELD_CONFIG.replace('"thread"', '"auto"'), HELD_MODEL)
    model = slot.engine.model  # type: ignore[union-attr]
    slot.calls.note_cost(10_000_000)  # looks slow: the first call goes to a thread
    model.release.clear()
    model.entered.clear()
    before = len(model.threads)  # load and warm-up calls ran on the loader thread
    first = asyncio.ensure_future(slot.infer(_x(), None))
    await eventually_async(model.entered.is_set, what="the first call is running on a thread")
    slot.calls.note_cost(1_000)  # now looks tiny: auto would like to go inline
    loop_thread = threading.current_thread().name
    second = asyncio.ensure_future(slot.infer(_x(), None))
    # an inline call would block this loop on the held engine: the timer below could never fire
    await eventually_async(lambda: len(model.threads) == before + 2, timeout=5, what="the second call started")
    assert model.threads[before + 1] != loop_thread, "the second call ran inline on the event loop"
    model.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    third_threads = len(model.threads)
    slot.calls.note_cost(1_000)  # forget how long the held calls took
    await slot.infer(_x(), None)  # nothing outstanding any more: tiny calls run inline again
    assert model.threads[third_threads] == loop_thread
    await slot.drain_and_close("test", timeout=1)


def test_unloading_a_python_model_with_two_instances_waits_for_a_cancelled_callers_call(tmp_path: Path) -> None:
    write_model(tmp_path, "held", HELD_CONFIG, {1: HELD_MODEL})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        assert server.server is not None
        slot = server.server.registry.route("held")
        model = slot.engine.model  # type: ignore[union-attr]
        model.release.clear()
        model.entered.clear()
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        future = stub.Predict.future(_predict("held"))
        assert model.entered.wait(10)
        future.cancel()
        eventually(lambda: slot.in_flight == 0, what="the cancelled caller left the slot")
        admin_pb2_grpc.ModelServiceStub(channel).UnloadModel(admin_pb2.UnloadModelRequest(name="held"), timeout=10)
        eventually(lambda: slot.calls.closed, what="the unload reached closing the engine")
        assert model.close_saw_running is None and slot.state is not SlotState.UNLOADED
        model.release.set()
        eventually(lambda: slot.state is SlotState.UNLOADED, what="the version closed once its call returned")
        assert model.close_saw_running == 0


def test_a_stalled_deadline_less_stream_does_not_hold_an_unload_past_the_drain_bound(tmp_path: Path) -> None:
    write_model(tmp_path, "endless", ENDLESS_CONFIG, {1: ENDLESS_MODEL})
    with ServerThread(tmp_path, unload_drain_seconds=0.5) as server, grpc.insecure_channel(server.address) as channel:
        assert server.server is not None
        slot = server.server.registry.route("endless")
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.PredictStreamRequest(model_name="endless")
        request.inputs.add(name="x", data_type="DATA_TYPE_FP32", shape=[1, 4], fp32_contents=[1, 2, 3, 4])
        stream = stub.PredictStream(request)  # no deadline
        next(stream)  # ... then stop reading
        started = time.monotonic()
        admin_pb2_grpc.ModelServiceStub(channel).UnloadModel(admin_pb2.UnloadModelRequest(name="endless"), timeout=10)
        eventually(lambda: slot.state is SlotState.UNLOADED, timeout=20, what="the unload finished")
        assert time.monotonic() - started < 10
        with pytest.raises(grpc.RpcError) as failure:
            for _ in stream:
                pass
        assert failure.value.code() is grpc.StatusCode.UNAVAILABLE


#: a scale model whose calls beyond ``free_calls`` wait for ``release`` (the test holds a chunk mid-stream)
GATED_MODEL = """
import threading
import numpy as np

class Model:
    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.free_calls = 1_000_000

    def infer(self, inputs):
        self.calls += 1
        if self.calls > self.free_calls:
            self.entered.set()
            self.release.wait(30)
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * FACTOR}
"""

GATED_CONFIG = """
max_batch_size: 2
execution: "thread"
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


def test_a_swap_during_a_chunked_stream_finishes_the_stream_on_the_version_it_started_on(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, "gated", GATED_CONFIG, {1: GATED_MODEL.replace("FACTOR", "2.0")})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        assert server.server is not None
        old = server.server.registry.route("gated")
        model = old.engine.model  # type: ignore[union-attr]
        model.calls, model.free_calls = 0, 1  # the first chunk runs, the second waits for the test
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.PredictStreamRequest(model_name="gated", chunk_rows=2)
        request.inputs.add(name="x", data_type="DATA_TYPE_FP32", shape=[6, 4], fp32_contents=[1.0] * 24)
        stream = stub.PredictStream(request, timeout=30)
        first = next(stream)
        assert model.entered.wait(10), "the second chunk did not reach the engine"

        (model_dir / "2").mkdir()
        (model_dir / "2" / "model.py").write_text(GATED_MODEL.replace("FACTOR", "3.0"))
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        admin.LoadModel(admin_pb2.LoadModelRequest(name="gated"), timeout=30)
        assert stub.Predict(_predict("gated"), timeout=10).model_version == 2  # new calls go to the new version
        assert old.state is SlotState.DRAINING  # the open stream holds the old one

        model.release.set()
        rest = list(stream)
        messages = [first, *rest]
        assert [m.sequence_index for m in messages] == [0, 1, 2] and messages[-1].final
        assert {m.model_version for m in messages} == {1}
        values = [to_numpy(m.outputs[0]) for m in messages]
        assert [v.shape for v in values] == [(2, 4)] * 3 and all(np.allclose(v, 2.0) for v in values)
        eventually(lambda: old.state is SlotState.UNLOADED, what="the old version closed after its stream")
