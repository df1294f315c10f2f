"""A grpc.aio server whose interceptors wrap each method's handler once, when it is first called,
instead of running on every call.

grpc.aio runs a server's interceptors for every call before the handler is found: per interceptor a
``functools.partial`` and an ``intercept_service`` coroutine, awaited in a chain. inferd's interceptors
(:class:`~server.api.interceptors.WrappingInterceptor`) only ever wrap a method's handler, the same way
for every call, so the chain is pure per-call overhead (measured by ``make bench``'s profile in
docs/performance.md). :func:`wrapped_server` applies the same wrappers through the server's generic
handlers instead: the first call of a method wraps its handler, later calls find it in a dict.

Every registration goes through the returned object (``add_generic_rpc_handlers``; the generated
``add_*_to_server`` functions, health and reflection call that), so no handler escapes the wrappers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc

from server.api.interceptors import WrappingInterceptor

Wrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class _WrappedGeneric(grpc.GenericRpcHandler):
    """One generic handler whose handlers come out wrapped; found handlers are cached by method name
    (only found ones: a client naming random methods cannot grow the cache)."""

    __slots__ = ("_cache", "_inner", "_wrap")

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._cache.get(method)
        if handler is not None:
            return handler
        found = self._inner.service(handler_call_details)
        if found is None:
            return None
        handler = self._cache[method] = self._wrap(method, found)
        return handler


class WrappingServer:
    """Stands in for a grpc.aio server: registrations are wrapped, everything else is the server's."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[WrappingInterceptor]) -> None:
        self._server = server
        #: applied innermost first, so the first wrapper in the list is the outermost (as interceptors are)
        self._wrappers = tuple(reversed(wrappers))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for wrapper in self._wrappers:
            handler = wrapper.wrap(method, handler)
        return handler

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self._wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        # grpc.aio does not use registered methods yet; generated code registers the same handlers as a
        # generic handler too, which is what serves them. Wrapped here as well in case a version does.
        wrapped = {name: self._wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def wrapped_server(interceptors: Sequence[WrappingInterceptor], **server_args: Any) -> grpc.aio.Server:
    """``grpc.aio.server(**server_args)`` with ``interceptors`` applied per method at registration."""
    server = grpc.aio.server(**server_args)
    return cast(grpc.aio.Server, WrappingServer(server, interceptors))
