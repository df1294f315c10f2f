"""The one place errors become gRPC statuses.

ServingError → its own code and message. Anything unexpected → INTERNAL with the request id; the
traceback goes to the log only. Handlers are wrapped once per method, not per call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc.aio import AbortError

from server.core.echo import bounded
from server.core.errors import ServingError

log = logging.getLogger("inferd.errors")

#: The id of the request being handled in this task (set by the servicer once it is decoded).
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, ServingError):
        await context.abort(exc.code, bounded(exc.message))  # trailers have a hard size limit
    request_id = current_request_id.get() or "unknown"
    log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id}); see the server log")


def _wrap_unary(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)

    return unary


def _wrap_stream(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]], method: str
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        messages = behaviour(request, context)
        try:
            async for item in messages:
                yield item
        except AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)
        finally:
            # a stream gRPC ended (client gone, deadline) is closed now, not whenever it is collected
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await aclose()

    return stream


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once and caches it by method name, so the per-call cost of an
    interceptor built on this is one dict lookup plus whatever its wrapper does."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrapped[method] = self.wrap(method, handler)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to use for ``method`` from now on."""
        raise NotImplementedError


class ErrorStatusInterceptor(WrappingInterceptor):
    """ServingError → its status; anything else → INTERNAL with a request id (health and reflection untouched)."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method))
        return handler
