"""The calls a server has not finished, so that shutdown stops waiting once only calls that can never
finish are left.

gRPC's graceful stop waits for every open call until ``--grace-seconds`` pass. A call whose client
grants no HTTP/2 flow-control window can never finish: its next message, and the status behind it,
wait for a window that never comes, and gRPC gives a server no way to cancel one call. The health
Watch (:mod:`server.api.health`) notices such a client at shutdown and calls :func:`give_up`; when
every call still open on a server has given up, :func:`stop_server` cancels them all at once instead
of waiting out the grace period. Calls that are merely slow keep their grace period.

The interceptor wraps each method once (not per call); per unary call it costs one counter and one
done-callback, per stream call also a context variable (only streams give up). Stream handlers are
driven with ``context.write``, exactly as gRPC drives them, so a streamed message costs nothing extra.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from server.api.interceptors import WrappingInterceptor

Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


class _Call:
    """One open call: whether it gave up, and the tracker to tell when it ends."""

    __slots__ = ("calls", "given_up")

    def __init__(self, calls: LiveCalls) -> None:
        self.calls = calls
        self.given_up = False

    def done(self, _context: object) -> None:
        self.calls._ended(self)


_current: ContextVar[_Call | None] = ContextVar("inferd_live_call", default=None)


def give_up() -> None:
    """Say that the call being handled in this task can never finish (its client reads nothing), so it
    must not hold the server's stop; called by the handler itself. Outside a tracked call: nothing."""
    call = _current.get()
    if call is not None and not call.given_up:
        call.given_up = True
        call.calls._gave_up()


class LiveCalls(WrappingInterceptor):
    """Counts one server's open calls (from the handler's start until gRPC has sent the status) and
    those of them that gave up. Install it first, outside every other interceptor."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.given_up = 0
        self._change = asyncio.Event()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return handler._replace(
            unary_unary=self._wrap_unary(handler.unary_unary),
            stream_unary=self._wrap_unary(handler.stream_unary),
            unary_stream=self._wrap_stream(handler.unary_stream),
            stream_stream=self._wrap_stream(handler.stream_stream),
        )

    def _begin(self, context: grpc.aio.ServicerContext) -> None:
        call = _Call(self)
        _current.set(call)
        self.open += 1
        context.add_done_callback(call.done)

    def _ended(self, call: _Call) -> None:
        self.open -= 1
        if call.given_up:
            self.given_up -= 1
        self._changed()

    def _gave_up(self) -> None:
        self.given_up += 1
        self._changed()

    def _changed(self) -> None:
        self._change.set()

    def _wrap_unary(self, behaviour: Handler | None) -> Handler | None:
        if behaviour is None or not inspect.iscoroutinefunction(behaviour):
            return behaviour  # sync handlers (none here) run on gRPC's thread pool, untracked

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # no per-call record: only streams (a health Watch) ever give up (see ``give_up``)
            self.open += 1
            context.add_done_callback(self._unary_ended)
            return await behaviour(request, context)

        return unary

    def _unary_ended(self, _context: object) -> None:
        self.open -= 1
        self._changed()

    def _wrap_stream(self, behaviour: Handler | None) -> Handler | None:
        if behaviour is None:
            return behaviour
        if inspect.iscoroutinefunction(behaviour):  # writes with context.write itself

            async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
                self._begin(context)
                await behaviour(request, context)

            return writer
        if not inspect.isasyncgenfunction(behaviour):
            return behaviour

        async def generated(request: Any, context: grpc.aio.ServicerContext) -> None:
            self._begin(context)
            messages: AsyncIterator[Any] = behaviour(request, context)
            try:
                async for message in messages:
                    await context.write(message)
            finally:
                aclose = getattr(messages, "aclose", None)
                if aclose is not None:
                    await aclose()

        return generated

    async def wait_all_given_up(self) -> None:
        """Return once at least one call gave up and every open call has (they can only be cancelled)."""
        while not (self.given_up and self.open <= self.given_up):
            self._change.clear()
            await self._change.wait()


async def stop_server(server: grpc.aio.Server, grace: float, calls: LiveCalls) -> int:
    """``server.stop(grace)``, except that calls which gave up do not hold it: once every open call has
    given up, they are cancelled (their streams are reset) and the stop ends. Returns how many were."""
    stopping = asyncio.ensure_future(server.stop(grace))
    settled = asyncio.ensure_future(calls.wait_all_given_up())
    try:
        await asyncio.wait((stopping, settled), return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            await stopping
            return 0
        cancelled = calls.given_up
        await server.stop(None)  # cancels every call left; the graceful stop above returns with it
        await stopping
        return cancelled
    finally:
        settled.cancel()
