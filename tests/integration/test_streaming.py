"""PredictStream on a real server: generative streams (continuous batching), python generators, chunks.

Made deterministic with the server's own counters (ModelStatistics.streaming) and the scheduler's
``pause(after_steps)`` test hook, reached in-process through ServerThread: no sleeps decide anything.
Each test that reads counters has its own copy of the tiny_lm example, so counts start at zero.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from examples import tiny_lm
from inferd import AsyncClient, Client, errors
from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from server.core.types import SlotState
from server.scheduling.stream_scheduler import StreamScheduler
from tests.support import ServerThread, eventually_async, write_model

LM_CONFIG = """
engine: "generative"
max_batch_size: 0
input {{ name: "prompt" data_type: DATA_TYPE_BYTES dims: [-1] }}
output {{ name: "token_ids" data_type: DATA_TYPE_INT64 dims: [-1] }}
output {{ name: "text" data_type: DATA_TYPE_BYTES dims: [-1] }}
streaming {{ {streaming} }}
"""

LM_MODELS = {
    "lm": "max_active_streams: 8",
    "lm_first": "",
    "lm_join": "",
    "lm_concurrent": "",
    "lm_serial": "max_step_streams: 1",
    "lm_cancel": "",
    "lm_deadline": "",
    "lm_capped": "max_active_streams: 1 max_waiting_streams: 1",
    "lm_slow": "max_buffered_outputs: 4",
    "lm_drain": "",
}

SLOW_CONTEXT = 4096
SLOW_TOKENS = 4000

COUNTER_MODEL = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        start = int(np.asarray(inputs["start"]).reshape(-1)[0])
        for i in range(int(parameters.get("count", 3))):
            yield {"n": np.array([start + i], dtype=np.int64)}
"""

COUNTER_CONFIG = """
max_batch_size: 0
input { name: "start" data_type: DATA_TYPE_INT64 dims: [1] }
output { name: "n" data_type: DATA_TYPE_INT64 dims: [1] }
"""

FRAGILE_MODEL = """
import numpy as np

from engines.base import InvalidInput

class Model:
    eos_id = None
    max_context = 64

    def encode(self, text):
        return list(text) or [0]

    def token_bytes(self, token):
        return bytes([token])

    def new_cache(self, capacity):
        return {"fragile": False}

    def prefill(self, caches, prompts):
        if any(bytes(int(t) for t in prompt) == b"oov" for prompt in prompts):
            raise InvalidInput("token 'oov' is not in the vocabulary")
        for cache, prompt in zip(caches, prompts):
            cache["fragile"] = bytes(int(t) for t in prompt) == b"boom"
        logits = np.zeros((len(caches), 256), dtype=np.float32)
        logits[:, ord("a")] = 1.0
        return logits

    def decode(self, caches, tokens):
        if any(c["fragile"] for c in caches):
            raise RuntimeError("the decode step fell over")
        return self.prefill([{} for _ in caches], [[0] for _ in caches])

    def release(self, cache):
        pass

    def cache_nbytes(self, cache):
        return 0
"""

WIDE_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 600000] }
"""

WIDE_MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        return {"y": x + np.arange(600000, dtype=np.float32)}
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streaming-repo")
    source = root / "_tiny_lm"
    tiny_lm.write_model(source)
    for name, streaming in LM_MODELS.items():
        write_model(root, name, LM_CONFIG.format(streaming=streaming))
        if name == "lm_slow":  # a long context, so one stream outlasts the transport's flow-control window
            tiny_lm.write_model(root / name / "1", tiny_lm.TinyLMConfig(max_context=SLOW_CONTEXT))
        else:
            shutil.copytree(source, root / name / "1")
    shutil.rmtree(source)
    write_model(root, "counter", COUNTER_CONFIG, {1: COUNTER_MODEL})
    write_model(root, "fragile", LM_CONFIG.format(streaming=""), {1: FRAGILE_MODEL})
    write_model(root, "fragile_batch", LM_CONFIG.format(streaming=""), {1: FRAGILE_MODEL})
    write_model(root, "wide", WIDE_CONFIG, {1: WIDE_MODEL})
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    with ServerThread(repository) as running:
        yield running


@pytest.fixture(scope="module")
def reference(repository: Path) -> tiny_lm.Model:
    """The same weights, run in-process step by step."""
    return tiny_lm.Model(weights=repository / "lm" / "1" / tiny_lm.WEIGHTS_FILE)


@pytest.fixture()
async def stub(server: ServerThread) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def scheduler(server: ServerThread, model: str) -> StreamScheduler:
    assert server.server is not None
    streams = server.server.registry.route(model).streams
    assert isinstance(streams, StreamScheduler)
    return streams


def on_server(server: ServerThread, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the server's event loop (the scheduler is not thread-safe)."""

    async def call() -> Any:
        return fn()

    return server.call(call())


def generation(model: str, prompt: bytes, **params: Any) -> inference_pb2.PredictStreamRequest:
    array = np.empty(1, dtype=object)
    array[0] = prompt
    request = inference_pb2.PredictStreamRequest(model_name=model, inputs=[from_numpy("prompt", array)])
    for key, value in params.items():
        param = tensor_pb2.Parameter()
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = value
        request.parameters[key].CopyFrom(param)
    return request


def tokens_of(message: inference_pb2.PredictStreamResponse) -> list[int]:
    found = {t.name: to_numpy(t) for t in message.outputs}
    return [int(t) for t in found["token_ids"]]


async def streaming_stats(stub: inference_pb2_grpc.InferenceServiceStub, model: str) -> inference_pb2.StreamStatistics:
    reply = await stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=model), timeout=5)
    return reply.statistics[0].streaming


async def wait_for(
    stub: inference_pb2_grpc.InferenceServiceStub,
    model: str,
    condition: Callable[[inference_pb2.StreamStatistics], bool],
    timeout: float = 20,
) -> inference_pb2.StreamStatistics:
    """Poll the server's own counters until ``condition`` holds."""

    async def check() -> inference_pb2.StreamStatistics | None:
        stats = await streaming_stats(stub, model)
        return stats if condition(stats) else None

    return await eventually_async(check, timeout=timeout, what=f"streaming statistics of {model}")


async def collect(call: Any) -> list[inference_pb2.PredictStreamResponse]:
    """Read a call to its end (read(), not iteration: the two styles cannot mix on one call)."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


def check_sequence(messages: list[inference_pb2.PredictStreamResponse]) -> None:
    assert [m.sequence_index for m in messages] == list(range(len(messages)))
    assert [m.final for m in messages] == [False] * (len(messages) - 1) + [True]


# --- incremental delivery and correctness --------------------------------------------------------


async def test_first_message_arrives_while_generation_is_still_running(server, stub):
    on_server(server, lambda: scheduler(server, "lm_first").pause(after_steps=3))
    call = stub.PredictStream(generation("lm_first", b"The keeper", max_tokens=20, ignore_eos=True), timeout=30)
    first = await call.read()
    assert first.sequence_index == 0 and not first.final and tokens_of(first)
    held = await wait_for(stub, "lm_first", lambda s: s.steps == 3)
    assert held.generated_tokens == 3 and held.active_streams == 1 and held.streams_completed == 0
    on_server(server, lambda: scheduler(server, "lm_first").resume())
    rest = await collect(call)
    messages = [first, *rest]
    check_sequence(messages)
    assert sum(len(tokens_of(m)) for m in messages) == 20
    final = messages[-1].parameters
    assert final["finish_reason"].string_param == "length"
    assert final["generated_tokens"].int64_param == 20
    done = await wait_for(stub, "lm_first", lambda s: s.streams_completed == 1)
    assert done.active_streams == 0 and done.caches_freed == 1 and done.cache_bytes == 0


async def test_greedy_stream_equals_the_model_run_in_process_step_by_step(stub, reference):
    prompt = b"A server answers"
    expected = tiny_lm.generate_greedy(reference, prompt, 60)
    messages = await collect(stub.PredictStream(generation("lm", prompt, max_tokens=60, temperature=0.0, seed=7)))
    check_sequence(messages)
    tokens = [t for m in messages for t in tokens_of(m)]
    assert tokens == expected
    text = b"".join(bytes(to_numpy(t)[0]) for m in messages for t in m.outputs if t.name == "text")
    assert text == bytes(expected).decode("utf-8", "replace").encode()


def test_sdk_predict_stream_and_generate_agree(server, reference):
    prompt = "The river ran"
    expected = bytes(tiny_lm.generate_greedy(reference, prompt.encode(), 25)).decode("utf-8", "replace")
    with Client(server.address, timeout=30) as client:
        pieces = list(client.generate("lm", prompt, max_tokens=25, temperature=0.0))
        chunks = list(client.predict_stream("lm", {"prompt": np.array([prompt.encode()], dtype=object)}))
    assert "".join(pieces) == expected
    assert all(isinstance(p, str) for p in pieces) and len(pieces) > 1
    assert chunks[-1].final and chunks[-1].parameters["finish_reason"] in ("length", "eos")


async def test_async_sdk_generate_with_a_seed_is_reproducible(server):
    runs: list[str] = []
    async with AsyncClient(server.address, timeout=30) as client:
        for seed in (5, 5, 6):
            pieces = client.generate("lm", "She", max_tokens=30, temperature=0.9, top_k=20, seed=seed)
            runs.append("".join([p async for p in pieces]))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_inferd_generate_prints_the_text(server, reference, capsys):
    from server.cli.main import main

    code = main(
        ["generate", "lm", "When the storm", "--max-tokens", "15", "--temperature", "0", "--address", server.address]
    )
    out = capsys.readouterr().out
    assert code == 0
    expected = bytes(tiny_lm.generate_greedy(reference, b"When the storm", 15)).decode("utf-8", "replace")
    assert out == expected + "\n"
    assert main(["stats", "lm", "--address", server.address]) == 0
    assert "lm v1 streams: 0 active, 0 waiting, 0 paused;" in capsys.readouterr().out


# --- continuous batching ------------------------------------------------------------------------------


async def test_concurrent_streams_of_different_lengths_finish_independently(server, stub, reference):
    model = "lm_concurrent"
    on_server(server, lambda: scheduler(server, model).pause())  # hold until all four have joined
    prompts = [b"A", b"The lighthouse", b"She planted", b"Tokens arrive"]
    lengths = [3, 8, 20, 40]
    calls = [
        stub.PredictStream(generation(model, p, max_tokens=n, temperature=0.0, ignore_eos=True), timeout=30)
        for p, n in zip(prompts, lengths, strict=True)
    ]
    tasks = [asyncio.ensure_future(collect(call)) for call in calls]
    await wait_for(stub, model, lambda s: s.active_streams == 4)
    on_server(server, lambda: scheduler(server, model).resume())
    finished: list[int] = []
    for done in asyncio.as_completed(tasks):
        messages = await done
        check_sequence(messages)
        finished.append(sum(len(tokens_of(m)) for m in messages))
    assert finished == sorted(lengths)  # the short ones did not wait for the long ones
    for task, prompt, n in zip(tasks, prompts, lengths, strict=True):
        tokens = [t for m in task.result() for t in tokens_of(m)]
        assert tokens == _greedy_ignoring_eos(reference, prompt, n)
    stats = await wait_for(stub, model, lambda s: s.streams_completed == 4)
    assert stats.steps == max(lengths)  # stepped together, not one after another
    assert stats.step_streams == sum(lengths)


async def test_a_new_stream_joins_between_steps(server, stub):
    model = "lm_join"
    on_server(server, lambda: scheduler(server, model).pause(after_steps=5))
    long = stub.PredictStream(generation(model, b"The", max_tokens=30, ignore_eos=True), timeout=30)
    long_task = asyncio.ensure_future(collect(long))
    await wait_for(stub, model, lambda s: s.steps == 5)
    short = stub.PredictStream(generation(model, b"A", max_tokens=5, ignore_eos=True), timeout=30)
    short_task = asyncio.ensure_future(collect(short))
    await wait_for(stub, model, lambda s: s.active_streams == 2)
    on_server(server, lambda: scheduler(server, model).resume())
    assert sum(len(tokens_of(m)) for m in await short_task) == 5
    assert not long_task.done() or len(await long_task) > 0
    await long_task
    stats = await wait_for(stub, model, lambda s: s.streams_completed == 2)
    assert stats.steps == 30 and stats.step_streams == 35


async def test_with_continuous_batching_off_each_step_advances_one_stream(server, stub, reference):
    model = "lm_serial"
    on_server(server, lambda: scheduler(server, model).pause())
    calls = [
        stub.PredictStream(generation(model, p, max_tokens=n, temperature=0.0, ignore_eos=True), timeout=30)
        for p, n in ((b"A", 4), (b"The", 6))
    ]
    tasks = [asyncio.ensure_future(collect(call)) for call in calls]
    await wait_for(stub, model, lambda s: s.active_streams == 2)
    on_server(server, lambda: scheduler(server, model).resume())
    results = await asyncio.gather(*tasks)
    assert [[t for m in r for t in tokens_of(m)] for r in results] == [
        _greedy_ignoring_eos(reference, b"A", 4),
        _greedy_ignoring_eos(reference, b"The", 6),
    ]
    stats = await streaming_stats(stub, model)
    assert stats.steps == 10 and stats.step_streams == 10


# --- cancellation, deadlines, bounds -------------------------------------------------------------


async def test_a_cancelled_stream_stops_within_one_step_and_frees_its_cache_while_others_finish(
    server, stub, reference
):
    model = "lm_cancel"
    on_server(server, lambda: scheduler(server, model).pause())
    doomed = stub.PredictStream(generation(model, b"The", max_tokens=200, ignore_eos=True), timeout=30)
    other = stub.PredictStream(generation(model, b"A", max_tokens=12, temperature=0.0, ignore_eos=True), timeout=30)
    other_task = asyncio.ensure_future(collect(other))
    await wait_for(stub, model, lambda s: s.active_streams == 2)
    on_server(server, lambda: scheduler(server, model).pause(after_steps=2))
    await wait_for(stub, model, lambda s: s.steps == 2)
    assert tokens_of(await doomed.read())
    doomed.cancel()
    stats = await wait_for(stub, model, lambda s: s.streams_cancelled == 1 and s.caches_freed == 1)
    assert stats.active_streams == 1 and stats.generated_tokens == 4
    on_server(server, lambda: scheduler(server, model).resume())
    messages = await other_task
    assert [t for m in messages for t in tokens_of(m)] == _greedy_ignoring_eos(reference, b"A", 12)
    stats = await wait_for(stub, model, lambda s: s.streams_completed == 1)
    assert stats.generated_tokens == 4 + 10  # the cancelled stream never stepped again
    assert stats.caches_freed == 2 and stats.cache_bytes == 0 and stats.active_streams == 0
    assert stats.buffered_outputs == 0


async def test_deadline_expiry_mid_stream_ends_with_deadline_exceeded_and_frees_the_cache(server, stub):
    model = "lm_deadline"
    on_server(server, lambda: scheduler(server, model).pause(after_steps=2))
    call = stub.PredictStream(generation(model, b"The", max_tokens=500, ignore_eos=True), timeout=1.0)
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while (message := await call.read()) is not grpc.aio.EOF:
            received += len(tokens_of(message))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received == 2
    stats = await wait_for(stub, model, lambda s: s.streams_expired == 1 and s.caches_freed == 1)
    assert stats.active_streams == 0 and stats.cache_bytes == 0 and stats.streams_completed == 0
    on_server(server, lambda: scheduler(server, model).resume())


async def test_beyond_max_active_streams_and_a_full_wait_queue_is_resource_exhausted(server, stub):
    model = "lm_capped"
    on_server(server, lambda: scheduler(server, model).pause())
    active = stub.PredictStream(generation(model, b"A", max_tokens=3), timeout=30)
    active_task = asyncio.ensure_future(collect(active))
    await wait_for(stub, model, lambda s: s.active_streams == 1)
    waiting = stub.PredictStream(generation(model, b"B", max_tokens=3), timeout=30)
    waiting_task = asyncio.ensure_future(collect(waiting))
    await wait_for(stub, model, lambda s: s.waiting_streams == 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.PredictStream(generation(model, b"C", max_tokens=3), timeout=30))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_active_streams 1, max_waiting_streams 1" in info.value.details()
    waiting.cancel()
    stats = await wait_for(stub, model, lambda s: s.waiting_streams == 0 and s.streams_cancelled == 1)
    assert stats.streams_rejected == 1
    on_server(server, lambda: scheduler(server, model).resume())
    check_sequence(await active_task)
    with pytest.raises(asyncio.CancelledError):
        await waiting_task


async def test_a_slow_reader_pauses_its_stream_instead_of_growing_buffers(server, stub):
    model = "lm_slow"  # max_buffered_outputs: 4
    options = [("grpc.http2.bdp_probe", 0)]  # keep the transport's window small, as a stalled client's is
    async with grpc.aio.insecure_channel(server.address, options=options) as channel:
        slow_stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = generation(model, b"The", max_tokens=SLOW_TOKENS, ignore_eos=True)
        slow = slow_stub.PredictStream(request, timeout=60)
        assert tokens_of(await slow.read())  # ... and then stop reading
        stats = await wait_for(stub, model, lambda s: s.paused_streams == 1)
        assert stats.buffered_outputs <= 4 and stats.max_buffered_outputs <= 4
        paused_at = stats.generated_tokens
        assert paused_at < SLOW_TOKENS
        quick = await collect(stub.PredictStream(generation(model, b"A", max_tokens=10, ignore_eos=True), timeout=30))
        assert sum(len(tokens_of(m)) for m in quick) == 10
        stats = await streaming_stats(stub, model)
        assert stats.generated_tokens == paused_at + 10  # steps ran, but not for the paused stream
        assert stats.max_buffered_outputs <= 4
        rest = await collect(slow)  # reading again resumes it, to the end
        assert rest[-1].final
        total = (await streaming_stats(stub, model)).generated_tokens
        assert total == SLOW_TOKENS + 10


async def test_drain_waits_for_an_open_stream(server, stub):
    model = "lm_drain"
    assert server.server is not None
    slot = server.server.registry.route(model)
    on_server(server, lambda: scheduler(server, model).pause(after_steps=1))
    call = stub.PredictStream(generation(model, b"The", max_tokens=6, ignore_eos=True), timeout=30)
    first = await call.read()
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(server.server.manager.unload(model), server.loop))
    assert slot.state is SlotState.DRAINING and slot.in_flight == 1  # the open stream holds the drain
    on_server(server, lambda: slot.streams.resume())
    rest = await collect(call)
    assert sum(len(tokens_of(m)) for m in [first, *rest]) == 6 and rest[-1].final
    await eventually_async(lambda: slot.state is SlotState.UNLOADED, timeout=10, what="the drained slot unloads")


async def test_a_model_error_ends_its_stream_with_internal_and_the_scheduler_serves_on(stub):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.PredictStream(generation("fragile", b"boom", max_tokens=5), timeout=30))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "request id" in info.value.details() and "fell over" not in info.value.details()
    messages = await collect(stub.PredictStream(generation("fragile", b"fine", max_tokens=5, temperature=0.0)))
    check_sequence(messages)
    assert [t for m in messages for t in tokens_of(m)] == [ord("a")] * 5
    stats = await streaming_stats(stub, "fragile")
    assert stats.streams_failed == 1 and stats.streams_completed == 1 and stats.active_streams == 0


async def test_one_bad_prompt_fails_only_its_own_stream_in_a_shared_step(server, stub):
    model = "fragile_batch"
    on_server(server, lambda: scheduler(server, model).pause())  # hold until all have joined one step
    prompts = [b"fine", b"boom", b"oov", b"also fine"]
    calls = [stub.PredictStream(generation(model, p, max_tokens=5, temperature=0.0), timeout=30) for p in prompts]
    tasks = [asyncio.ensure_future(collect(call)) for call in calls]
    await wait_for(stub, model, lambda s: s.active_streams == len(prompts))
    on_server(server, lambda: scheduler(server, model).resume())
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for prompt, result in zip(prompts, results, strict=True):
        if prompt == b"boom":  # its decode step fell over: a model failure
            assert isinstance(result, grpc.aio.AioRpcError) and result.code() == grpc.StatusCode.INTERNAL
        elif prompt == b"oov":  # the model said its input was bad: the client's fault, named
            assert isinstance(result, grpc.aio.AioRpcError) and result.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "model 'fragile_batch'" in result.details() and "not in the vocabulary" in result.details()
        else:
            assert not isinstance(result, BaseException), f"{prompt!r} failed: {result}"
            check_sequence(result)
            assert [t for m in result for t in tokens_of(m)] == [ord("a")] * 5
    stats = await wait_for(stub, model, lambda s: s.streams_completed == 2)
    assert stats.streams_failed == 2 and stats.active_streams == 0 and stats.buffered_outputs == 0


# --- python generators, chunked results, unary refusal ---------------------------------------------


async def test_a_python_generator_streams_one_message_per_yield(stub):
    request = inference_pb2.PredictStreamRequest(
        model_name="counter", inputs=[from_numpy("start", np.array([10], dtype=np.int64))]
    )
    request.parameters["count"].int64_param = 4
    messages = await collect(stub.PredictStream(request, timeout=30))
    check_sequence(messages)
    assert [int(to_numpy(m.outputs[0])[0]) for m in messages[:-1]] == [10, 11, 12, 13]
    assert not messages[-1].outputs  # the generator was exhausted: an output-less final message
    stats = await streaming_stats(stub, "counter")
    assert stats.streams_completed >= 1


@pytest.mark.parametrize("model", ["lm", "counter"])
async def test_unary_predict_on_a_streaming_only_model_fails_precondition(stub, model):
    name = "prompt" if model == "lm" else "start"
    value = np.array([b"hi"], dtype=object) if model == "lm" else np.array([1], dtype=np.int64)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Predict(inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy(name, value)]), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PredictStream" in info.value.details()
    meta = await stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name=model), timeout=10)
    assert meta.streaming_only


def test_a_chunked_result_larger_than_8_mib_arrives_whole(server):
    x = np.arange(4, dtype=np.float32).reshape(4, 1)  # 4 rows x 600000 floats = 9.6 MB in all
    with Client(server.address, timeout=60) as client:
        chunks = list(client.predict_stream("wide", {"x": x}, chunk_rows=1))
        meta = client.metadata("wide")
    assert [c.sequence_index for c in chunks] == [0, 1, 2, 3] and [c.final for c in chunks] == [0, 0, 0, 1]
    whole = np.concatenate([c.outputs["y"] for c in chunks])
    assert whole.nbytes > 8 * 1024 * 1024
    np.testing.assert_array_equal(whole, x + np.arange(600000, dtype=np.float32))
    assert not meta.streaming_only


def test_bad_generation_requests_are_invalid_argument(server):
    with Client(server.address, timeout=10) as client:
        with pytest.raises(errors.InvalidArgument, match="top_p"):
            list(client.generate("lm", "x", top_p=1.5))
        with pytest.raises(errors.InvalidArgument, match="unknown generation parameter 'max_token'"):
            list(client.generate("lm", "x", max_token=3))
        with pytest.raises(errors.InvalidArgument, match="chunk_rows cannot apply"):
            list(client.predict_stream("lm", {"prompt": np.array([b"x"], dtype=object)}, chunk_rows=2))
        with pytest.raises(errors.InvalidArgument, match="exceed the model's context of 1024 tokens"):
            list(client.generate("lm", "x" * 1000, max_tokens=100))


def _greedy_ignoring_eos(model: tiny_lm.Model, prompt: bytes, n: int) -> list[int]:
    """Greedy tokens with EOS allowed as an ordinary token (ignore_eos), in-process."""
    ids = np.array(model.encode(prompt))
    cache = model.new_cache(len(ids) + n)
    try:
        logits = model.prefill([cache], [ids])[0]
        tokens: list[int] = []
        while len(tokens) < n:
            token = int(np.argmax(logits))
            tokens.append(token)
            if len(tokens) < n:
                logits = model.decode([cache], np.array([token]))[0]
        return tokens
    finally:
        model.release(cache)
