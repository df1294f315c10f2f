"""Interceptors applied once per method at registration (server/api/handler_wrapping.py), on a real server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api.handler_wrapping import WrappingServer, wrapped_server
from server.api.health import Health
from server.api.interceptors import WrappingInterceptor


class Tagging(WrappingInterceptor):
    """Appends its tag to every unary answer; counts wraps and per-call interceptor runs."""

    def __init__(self, tag: bytes) -> None:
        super().__init__()
        self.tag = tag
        self.wraps: Counter[str] = Counter()
        self.intercepted = 0

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        self.intercepted += 1
        return await super().intercept_service(continuation, handler_call_details)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.wraps[method] += 1
        inner = handler.unary_unary
        if inner is None or not method.startswith("/t."):
            return handler
        tag = self.tag

        async def tagged(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return bytes(await inner(request, context)) + tag

        return handler._replace(unary_unary=tagged)


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _echo_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("t.Echo", {"Say": grpc.unary_unary_rpc_method_handler(_echo)})


async def _serve(server: grpc.aio.Server, body: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await body(channel)
    finally:
        await server.stop(None)


def test_wrappers_apply_in_interceptor_order_once_per_method_and_never_per_call() -> None:
    outer, inner = Tagging(b"<outer"), Tagging(b"<inner")

    async def calls(channel: grpc.aio.Channel) -> None:
        say = channel.unary_unary("/t.Echo/Say")
        for _ in range(5):
            # the first wrapper in the list is the outermost, as with grpc.aio interceptors
            assert await say(b"hi") == b"hi<inner<outer"

    async def run() -> None:
        server = wrapped_server([outer, inner])
        server.add_generic_rpc_handlers((_echo_handler(),))
        await _serve(server, calls)

    asyncio.run(run())
    assert outer.wraps == {"/t.Echo/Say": 1} and inner.wraps == {"/t.Echo/Say": 1}
    assert outer.intercepted == 0 and inner.intercepted == 0  # grpc.aio ran no interceptor chain per call


def test_an_unknown_method_is_unimplemented_and_leaves_no_cache_entry() -> None:
    tagging = Tagging(b"!")
    servers: list[grpc.aio.Server] = []

    async def calls(channel: grpc.aio.Channel) -> None:
        for n in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/t.Echo/Nope{n}")(b"x")
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    async def run() -> None:
        server = wrapped_server([tagging])
        server.add_generic_rpc_handlers((_echo_handler(),))
        servers.append(server)
        await _serve(server, calls)

    asyncio.run(run())
    assert not tagging.wraps
    wrapping = servers[0]
    assert isinstance(wrapping, WrappingServer)
    assert all(not generic._cache for generic in _generics(wrapping))


def test_handlers_registered_by_helpers_such_as_health_are_wrapped_too() -> None:
    seen = Tagging(b"")

    async def check(channel: grpc.aio.Channel) -> None:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def run() -> None:
        server = wrapped_server([seen])
        health = Health(("t.Echo",))
        health.add_to(server)
        await health.set_server(True)
        await _serve(server, check)

    asyncio.run(run())
    assert seen.wraps["/grpc.health.v1.Health/Check"] == 1


def _generics(server: WrappingServer) -> list[Any]:
    """The wrapped generic handlers grpc.aio holds (read back through the server's own list)."""
    inner = server._server
    handlers = getattr(inner, "_server", None)
    found = getattr(handlers, "_generic_handlers", None) or []
    return [h for h in found if hasattr(h, "_cache")]
