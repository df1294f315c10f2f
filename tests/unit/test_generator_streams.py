"""Python ``infer_stream`` models as PredictStream sessions: the engine lock, input errors, cleanup.

A real PythonEngine (engines/python.py) loaded from a model.py whose methods report on
``threading.Event``s, run through GeneratorStreams and EngineCalls with two executor threads, so a
stream step and a unary call really could run at once if the engine let them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest

from engines import python as python_engine
from engines.base import LoadSpec, Signature, TensorSig
from engines.stream_part import StreamPart
from server.core.errors import InvalidArgument, Unavailable
from server.scheduling.execution import EngineCalls
from server.scheduling.generator_streams import GeneratorStreams
from server.scheduling.settings import StreamingSpec
from server.scheduling.streams import streams_for
from server.telemetry.stats import StreamCounters
from tests.support import eventually_async

MODEL = """
import threading

import numpy as np

from engines.base import InvalidInput


class Model:
    def __init__(self):
        self.stream_inside = threading.Event()  # set while a generator step runs
        self.let_stream_go = threading.Event()  # the test lets a held generator step finish
        self.infer_entered = threading.Event()
        self.generator_closed = threading.Event()
        self.overlap = False

    def infer(self, inputs):
        if self.stream_inside.is_set():
            self.overlap = True
        self.infer_entered.set()
        return {"y": np.asarray(inputs["x"], dtype=np.float32)}

    def infer_stream(self, inputs, parameters):
        count = int(parameters.get("count", 2))
        if count < 0:
            raise InvalidInput(f"count must be >= 0, got {count}")
        try:
            for i in range(count):
                if parameters.get("hold", False):
                    self.stream_inside.set()
                    try:
                        self.let_stream_go.wait(30)
                    finally:
                        self.stream_inside.clear()
                yield {"y": np.full((1, 1), i, dtype=np.float32)}
        finally:
            self.generator_closed.set()
"""

SIGNATURE = Signature(inputs=(TensorSig("x", "FP32", (-1, 1)),), outputs=(TensorSig("y", "FP32", (-1, 1)),))
X = {"x": np.ones((1, 1), dtype=np.float32)}


@pytest.fixture()
def engine(tmp_path: Path) -> python_engine.PythonEngine:
    (tmp_path / "model.py").write_text(dedent(MODEL))
    loaded = python_engine.load(LoadSpec("gen", 1, tmp_path / "model.py", SIGNATURE, max_batch_size=8))
    yield loaded
    loaded.model.let_stream_go.set()
    loaded.close()


@pytest.fixture()
async def calls() -> AsyncIterator[EngineCalls]:
    engine_calls = EngineCalls("gen", 1, mode="thread", instances=2)
    yield engine_calls
    await engine_calls.close(None)


@pytest.fixture()
def counters() -> StreamCounters:
    return StreamCounters()


@pytest.fixture()
def streams(engine, counters, calls) -> GeneratorStreams:
    server = streams_for("gen", engine, StreamingSpec(), ("y",), counters, calls)
    assert isinstance(server, GeneratorStreams)
    return server


async def collect(streams: GeneratorStreams, **parameters: object) -> list[StreamPart]:
    return [part async for part in streams.session(X, parameters, None)]


async def test_a_stream_step_and_a_unary_infer_never_run_at_once(engine, streams, calls, counters):
    model = engine.model
    model.infer_entered.clear()  # the load's dry run called infer
    stream = asyncio.ensure_future(collect(streams, count=1, hold=True))
    await eventually_async(model.stream_inside.is_set, what="the generator is inside its step")
    unary = asyncio.ensure_future(calls.run(engine.infer, X))  # on the executor's other thread
    done, _ = await asyncio.wait([unary], timeout=0.2)
    assert not done and not model.infer_entered.is_set(), "infer ran while a generator step was running"
    model.let_stream_go.set()
    await unary
    parts = await stream
    assert not model.overlap
    assert [p.final for p in parts] == [False, True] and parts[0].outputs["y"].tolist() == [[0.0]]
    assert counters.streams_completed == 1 and counters.active_streams == 0


async def test_input_an_infer_stream_rejects_is_invalid_argument_naming_the_model(streams, counters):
    with pytest.raises(InvalidArgument, match="model 'gen' rejected its input: count must be >= 0"):
        await collect(streams, count=-1)
    assert counters.streams_failed == 1 and counters.active_streams == 0


async def test_a_stream_cancelled_mid_step_closes_its_generator_after_the_step_returns(engine, streams, counters):
    model = engine.model
    stream = asyncio.ensure_future(collect(streams, count=3, hold=True))
    await eventually_async(model.stream_inside.is_set, what="the generator is inside its step")
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream
    assert counters.streams_cancelled == 1 and counters.active_streams == 0
    assert not model.generator_closed.is_set()  # close waits for the running next() to return
    model.let_stream_go.set()
    await eventually_async(model.generator_closed.is_set, what="the generator was closed")


def test_a_model_without_infer_stream_gets_no_stream_server(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "class Model:\n    def infer(self, inputs):\n        return {'y': inputs['x']}\n"
    )
    engine = python_engine.load(LoadSpec("plain", 1, tmp_path / "model.py", SIGNATURE, max_batch_size=8))
    try:
        assert not engine.streams
        assert streams_for("plain", engine, StreamingSpec(), ("y",), StreamCounters(), None) is None  # type: ignore[arg-type]
    finally:
        engine.close()


async def test_close_closes_an_open_generator_and_its_session_ends_unavailable(engine, streams, counters):
    session = streams.session(X, {"count": 5}, None)
    first = await session.__anext__()  # ... and the reader stops reading
    assert first.outputs["y"].tolist() == [[0.0]]
    await streams.close()
    assert engine.model.generator_closed.is_set()  # its finally ran before the engine could close
    with pytest.raises(Unavailable, match="unloading"):
        await session.__anext__()
    assert counters.active_streams == 0 and counters.streams_failed == 0
    with pytest.raises(Unavailable):
        await collect(streams)
