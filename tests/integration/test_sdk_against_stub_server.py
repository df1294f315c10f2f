"""Client and AsyncClient against a tiny real gRPC server that echoes its inputs.

The stub runs on its own event loop in a thread, so sync clients and async clients (on the test's
loop) can both call it. Cancellation is observed with asyncio.Events set by the handlers, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
import pytest

from inferd import AsyncClient, Client, Prediction, StreamChunk, errors
from inferd.predictions import get_parameters, set_parameters
from inferd.tensors import fill_tensor, to_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc

health_v1 = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

T = TypeVar("T")


class EchoServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Echoes inputs as outputs. Parameters steer it: hold (never answer), typed (typed outputs)."""

    def __init__(self) -> None:
        self.cancelled: dict[str, asyncio.Event] = {}

    def event(self, request_id: str) -> asyncio.Event:
        return self.cancelled.setdefault(request_id, asyncio.Event())

    async def _hold(self, request_id: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.event(request_id).set()
            raise

    async def _check(self, request: Any, context: grpc.aio.ServicerContext) -> dict[str, Any]:
        if request.model_name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model 'missing' not found (request id {request.id})")
        params = get_parameters(request.parameters)
        if params.get("hold"):
            await self._hold(request.id)
        return params

    def _reply_parameters(self, target: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
        params = get_parameters(request.parameters)
        md = dict(context.invocation_metadata() or ())
        params["seen_key"] = md.get("x-api-key", "")
        params["routing_key"] = request.routing_key
        params.pop("hold", None)
        set_parameters(target, params)

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> inference_pb2.PredictResponse:
        params = await self._check(request, context)
        response = inference_pb2.PredictResponse(
            model_name=request.model_name, model_version=request.model_version or 7, id=request.id or "srv"
        )
        for tensor in request.inputs:
            fill_tensor(response.outputs.add(), tensor.name, to_numpy(tensor), raw=not params.get("typed"))
        if request.requested_outputs:
            keep = [t for t in response.outputs if t.name in request.requested_outputs]
            del response.outputs[:]
            response.outputs.extend(keep)
        self._reply_parameters(response.parameters, request, context)
        return response

    async def PredictStream(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            await self._stream(request, context)
        except asyncio.CancelledError:  # wherever the handler was: writing, or holding the stream open
            self.event(request.id).set()
            raise

    async def _stream(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        if request.model_name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "model 'missing' not found")
        params = get_parameters(request.parameters)
        arrays = {t.name: to_numpy(t) for t in request.inputs}
        rows = len(next(iter(arrays.values()))) if arrays else 0
        step = request.chunk_rows or 1
        starts = list(range(0, rows, step))
        for index, start in enumerate(starts):
            final = index == len(starts) - 1 and not params.get("hold")
            message = inference_pb2.PredictStreamResponse(
                model_name=request.model_name,
                model_version=3,
                id=request.id,
                sequence_index=index,
                final=final,
            )
            for name, array in arrays.items():
                fill_tensor(message.outputs.add(), name, array[start : start + step])
            await context.write(message)
            if params.get("fail_after") == index + 1:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "stream budget spent")
        if params.get("hold"):
            await asyncio.Event().wait()

    async def ModelMetadata(self, request: Any, context: Any) -> inference_pb2.ModelMetadataResponse:
        return inference_pb2.ModelMetadataResponse(name=request.name, version=request.version or 7)

    async def ListModels(self, request: Any, context: Any) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelStatus(name="echo")])

    async def ServerMetadata(self, request: Any, context: Any) -> inference_pb2.ServerMetadataResponse:
        return inference_pb2.ServerMetadataResponse(name="stub", version="0")


class StubServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sdk-stub-server", daemon=True)
        self.servicer = EchoServicer()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, self.server)
        self.health = health_v1.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("model/echo", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("model/cold", health_pb2.HealthCheckResponse.NOT_SERVING)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def start(self) -> str:
        self.thread.start()
        return f"127.0.0.1:{self.call(self._start())}"

    def stop(self) -> None:
        self.call(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _wait_cancelled(self, request_id: str) -> bool:
        await asyncio.wait_for(self.servicer.event(request_id).wait(), 10)
        return True

    def wait_cancelled(self, request_id: str) -> bool:
        """Block until the handler for request_id saw its call cancelled."""
        return self.call(self._wait_cancelled(request_id), timeout=15)

    async def await_cancelled(self, request_id: str) -> bool:
        """The same, without blocking the caller's event loop."""
        future = asyncio.run_coroutine_threadsafe(self._wait_cancelled(request_id), self.loop)
        return await asyncio.wrap_future(future)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubServer]:
    server = StubServer()
    server.address = server.start()  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture()
def address(stub_server: StubServer) -> str:
    return stub_server.address  # type: ignore[attr-defined]


@pytest.fixture()
def client(address: str) -> Iterator[Client]:
    with Client(address, timeout=10, metadata={"x-api-key": "k1"}) as c:
        yield c


def inputs() -> dict[str, Any]:
    return {
        "x": np.arange(10, dtype=np.float32).reshape(5, 2),
        "ids": np.array([[1], [2], [3], [4], [5]], dtype=np.int64),
        "text": np.array([b"a", b"bb", b"", "d\u00e9".encode(), b"e"], dtype=object),
    }


def assert_echo(outputs: dict[str, np.ndarray], sent: dict[str, Any]) -> None:
    assert set(outputs) == set(sent)
    for name, array in sent.items():
        if array.dtype == object:
            assert outputs[name].tolist() == array.tolist()
        else:
            assert outputs[name].dtype == array.dtype
            np.testing.assert_array_equal(outputs[name], array)


# --- sync Client ---------------------------------------------------------------------------------


def test_predict_round_trip(client: Client) -> None:
    outputs = client.predict("echo", inputs())
    assert_echo(outputs, inputs())
    assert not outputs["x"].flags.writeable


def test_predict_typed_outputs_and_requested_outputs(client: Client) -> None:
    outputs = client.predict("echo", inputs(), parameters={"typed": True}, outputs=["ids"])
    assert list(outputs) == ["ids"]
    np.testing.assert_array_equal(outputs["ids"], inputs()["ids"])


def test_predict_response_reports_version_id_and_parameters(client: Client) -> None:
    result = client.predict_response(
        "echo", {"x": [1.0]}, version=4, request_id="r-1", parameters={"p": 2}, routing_key="u9"
    )
    assert isinstance(result, Prediction)
    assert (result.model, result.version, result.id) == ("echo", 4, "r-1")
    assert result.parameters == {"p": 2, "seen_key": "k1", "routing_key": "u9"}
    np.testing.assert_array_equal(result.outputs["x"], np.array([1.0]))


def test_not_found_is_one_clean_exception(client: Client) -> None:
    with pytest.raises(errors.NotFound) as info:
        client.predict("missing", {"x": [1.0]}, request_id="abc123")
    assert str(info.value) == "NOT_FOUND: model 'missing' not found (request id abc123)"
    assert info.value.request_id == "abc123"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_timeout_is_deadline_exceeded_and_cancels_the_server_call(client: Client, stub_server: StubServer) -> None:
    with pytest.raises(errors.DeadlineExceeded):
        client.predict("echo", {"x": [1.0]}, parameters={"hold": True}, request_id="sync-deadline", timeout=0.2)
    assert stub_server.wait_cancelled("sync-deadline")


def test_client_default_timeout_applies(address: str) -> None:
    with Client(address, timeout=0.2) as c, pytest.raises(errors.DeadlineExceeded):
        c.predict("echo", {"x": [1.0]}, parameters={"hold": True}, request_id="sync-default-timeout")


def test_max_message_bytes_limits_requests(address: str) -> None:
    with Client(address, max_message_bytes=1024) as c:
        with pytest.raises(errors.ResourceExhausted):
            c.predict("echo", {"x": np.zeros(4096, np.uint8)})
        assert c.predict("echo", {"x": np.zeros(16, np.uint8)})["x"].shape == (16,)


def test_predict_stream_round_trip(client: Client) -> None:
    chunks = list(client.predict_stream("echo", inputs(), chunk_rows=2, request_id="s-1"))
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert [c.sequence_index for c in chunks] == [0, 1, 2]
    assert [c.final for c in chunks] == [False, False, True]
    assert {(c.model, c.version, c.id) for c in chunks} == {("echo", 3, "s-1")}
    joined = {name: np.concatenate([c.outputs[name] for c in chunks]) for name in inputs()}
    assert_echo(joined, inputs())


def test_breaking_off_a_stream_cancels_the_server_call(client: Client, stub_server: StubServer) -> None:
    for chunk in client.predict_stream("echo", inputs(), parameters={"hold": True}, request_id="sync-break"):
        assert chunk.sequence_index == 0
        break
    assert stub_server.wait_cancelled("sync-break")


def test_closing_a_stream_cancels_the_server_call(client: Client, stub_server: StubServer) -> None:
    stream = client.predict_stream("echo", inputs(), chunk_rows=5, parameters={"hold": True}, request_id="sync-close")
    with contextlib.closing(stream):
        first = next(stream)
        assert first.outputs["x"].shape == (5, 2) and not first.final
    assert stub_server.wait_cancelled("sync-close")


def test_stream_errors_are_typed(client: Client) -> None:
    with pytest.raises(errors.NotFound):
        list(client.predict_stream("missing", inputs()))
    seen: list[int] = []
    with pytest.raises(errors.ResourceExhausted, match="stream budget spent"):
        for chunk in client.predict_stream("echo", inputs(), parameters={"fail_after": 2}):
            seen.append(chunk.sequence_index)
    assert seen == [0, 1]


def test_health_metadata_and_listing(client: Client) -> None:
    assert client.health() == "SERVING"
    assert client.model_health("echo") == "SERVING"
    assert client.model_health("cold") == "NOT_SERVING"
    assert client.model_health("nope") == "SERVICE_UNKNOWN"
    client.wait_until_ready(5)
    assert client.metadata("echo", version=2).version == 2
    assert [m.name for m in client.list_models()] == ["echo"]
    assert client.server_metadata().name == "stub"


def test_wait_until_ready_gives_up_with_the_last_status(client: Client) -> None:
    with pytest.raises(errors.DeadlineExceeded, match=r"service 'model/cold' .*last: NOT_SERVING"):
        client.wait_until_ready(0.3, service="model/cold")


def test_wait_until_ready_without_a_server() -> None:
    with Client("127.0.0.1:1") as c, pytest.raises(errors.DeadlineExceeded, match="not SERVING after"):
        c.wait_until_ready(0.3)
    with Client("127.0.0.1:1") as c, pytest.raises(errors.Unavailable) as info:
        c.health()
    assert info.value.__suppress_context__


def test_a_given_channel_is_left_open(address: str) -> None:
    channel = grpc.insecure_channel(address)
    with Client(channel=channel) as c:
        assert c.health() == "SERVING"
    with Client(channel=channel) as c:
        assert c.health() == "SERVING"
    channel.close()


# --- AsyncClient ---------------------------------------------------------------------------------


async def test_async_predict_and_response(address: str) -> None:
    async with AsyncClient(address, timeout=10, metadata=[("x-api-key", "k2")]) as c:
        assert_echo(await c.predict("echo", inputs()), inputs())
        result = await c.predict_response("echo", {"x": [1, 2]}, label="stable", request_id="a-1")
        assert (result.version, result.id, result.parameters["seen_key"]) == (7, "a-1", "k2")
        assert await c.health() == "SERVING"
        assert await c.model_health("nope") == "SERVICE_UNKNOWN"
        await c.wait_until_ready(5)
        assert (await c.metadata("echo")).name == "echo"
        assert len(await c.list_models()) == 1
        assert (await c.server_metadata()).name == "stub"


async def test_async_errors(address: str, stub_server: StubServer) -> None:
    async with AsyncClient(address, timeout=10) as c:
        with pytest.raises(errors.NotFound) as info:
            await c.predict("missing", {"x": [1.0]}, request_id="zz9")
        assert info.value.request_id == "zz9" and info.value.__suppress_context__
        with pytest.raises(errors.DeadlineExceeded):
            await c.predict("echo", {"x": [1.0]}, parameters={"hold": True}, request_id="aio-deadline", timeout=0.2)
        assert await stub_server.await_cancelled("aio-deadline")
        with pytest.raises(errors.DeadlineExceeded, match="last: NOT_SERVING"):
            await c.wait_until_ready(0.3, service="model/cold")


async def test_async_stream_round_trip(address: str) -> None:
    async with AsyncClient(address) as c:
        chunks = [chunk async for chunk in c.predict_stream("echo", inputs(), chunk_rows=3)]
        assert [(ch.sequence_index, ch.final) for ch in chunks] == [(0, False), (1, True)]
        joined = {name: np.concatenate([ch.outputs[name] for ch in chunks]) for name in inputs()}
        assert_echo(joined, inputs())
        with pytest.raises(errors.ResourceExhausted):
            async for _ in c.predict_stream("echo", inputs(), parameters={"fail_after": 1}):
                pass


async def test_async_breaking_off_a_stream_cancels_the_server_call(address: str, stub_server: StubServer) -> None:
    async with AsyncClient(address) as c:
        async for chunk in c.predict_stream("echo", inputs(), parameters={"hold": True}, request_id="aio-break"):
            assert chunk.sequence_index == 0
            break
        assert await stub_server.await_cancelled("aio-break")


async def test_async_aclosing_a_stream_cancels_the_server_call(address: str, stub_server: StubServer) -> None:
    async with AsyncClient(address) as c:
        stream = c.predict_stream("echo", inputs(), parameters={"hold": True}, request_id="aio-aclose")
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                assert chunk.sequence_index == 0
                break
        assert await stub_server.await_cancelled("aio-aclose")
