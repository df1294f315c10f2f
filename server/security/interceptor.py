"""The one security interceptor: authenticate → authorize (method and model) → rate limit → audit.

Installed on every port only when the server has an auth config (``--auth-config``); without one nothing
here runs. It wraps each method's handler once (:class:`~server.api.interceptors.WrappingInterceptor`
pattern: the per-call cost is a dict lookup plus the wrapper), so the rules apply identically to every service
the server offers, now and later: a method without a rule in :mod:`server.security.methods` is refused.
Open methods (health, reflection by default) get their handler back untouched: probes cost nothing extra.

Order matters: a caller is authenticated before anything is said about models; rate limits are per
authenticated principal, so they come after authorization (an unauthorized caller cannot spend someone
else's budget); the audit log gets every denial and every control action with its outcome.

It sits outside ErrorStatusInterceptor (app.py), so its aborts are final and a ServingError raised by a
handler has already become its status when a control action's outcome is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from server.api.interceptors import WrappingInterceptor
from server.core.errors import InvalidArgument, PermissionDenied, ResourceExhausted, ServingError
from server.core.principal import Principal, current_principal
from server.security.authenticator import Authenticator, Unauthenticated
from server.security.authorization import Authorizer
from server.security.jwt_auth import UnknownKeyId
from server.security.methods import CONTROL, OPEN_RULE, Rule, model_of, rule_for
from server.security.rate_limits import RateLimiter, pushback_metadata
from server.security.wire_model import MalformedRequest

if TYPE_CHECKING:
    from server.security.audit import AuditLog

_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
_PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
#: "no model check yet" (a client-streaming call: each message is checked as it arrives)
_STREAMED = object()


class SecurityInterceptor(WrappingInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        authorizer: Authorizer,
        open_methods: tuple[str, ...],
        limiter: RateLimiter | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__()
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.open_methods = open_methods
        self.limiter = limiter
        self.audit = audit

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = rule_for(method, self.open_methods)
        if rule is OPEN_RULE:
            return handler
        gate = _Gate(self, method, rule)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=gate.unary_unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=gate.unary_stream(handler.unary_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=gate.stream_unary(handler.stream_unary))
        return handler._replace(stream_stream=gate.stream_stream(handler.stream_stream))


class _Gate:
    """One method's checks (its rule is found once, here, not per call)."""

    __slots__ = ("_audit", "_authenticator", "_authorizer", "_limiter", "_token_cache", "method", "rule")

    def __init__(self, owner: SecurityInterceptor, method: str, rule: Rule | None) -> None:
        self.method = method
        self.rule = rule
        self._authenticator = owner.authenticator
        self._token_cache = owner.authenticator.token_cache
        self._authorizer = owner.authorizer
        self._limiter = owner.limiter
        self._audit = owner.audit

    # --- the checks -------------------------------------------------------------------------------------

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> Principal:
        """The caller, allowed and within its rate; otherwise the call is aborted with the right status."""
        try:
            principal = self._authenticator.authenticate(context)
        except UnknownKeyId:
            try:
                principal = await self._authenticator.authenticate_after_refetch(context)
            except Unauthenticated as exc:
                await self.deny(None, _UNAUTHENTICATED, str(exc), context)
        except Unauthenticated as exc:
            await self.deny(None, _UNAUTHENTICATED, str(exc), context)
        rule = self.rule
        if rule is None:
            await self.deny(principal, _PERMISSION_DENIED, f"method {self.method} has no authorization rule", context)
        if request is not _STREAMED:
            await self.authorize(principal, request, context)
        limiter = self._limiter
        if limiter is not None:
            wait = limiter.admit(principal.name)
            if wait is not None:
                spec = limiter.spec_for(principal.name)
                detail = "" if spec is None else f": {spec.requests_per_second:g} requests/s, burst {spec.burst}"
                message = f"rate limit exceeded for principal {principal.name!r}{detail}; retry later"
                await self.deny(principal, _EXHAUSTED, message, context, rate_limited=True, wait=wait)
        current_principal.set(principal)
        return principal

    async def authorize(self, principal: Principal, request: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            self.check(principal, request, context)
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    def check(self, principal: Principal, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Raise the ServingError that refuses ``request`` (audited), if its model is not granted."""
        rule = self.rule
        assert rule is not None
        try:
            model = model_of(rule, request)
        except MalformedRequest as exc:
            raise InvalidArgument(f"the request is not a valid protobuf message: {exc}") from None
        denial = self._authorizer.check(principal, self.method, rule, model)
        if denial is not None:
            self.audit_denial(principal, _PERMISSION_DENIED, denial, context, model=model)
            raise PermissionDenied(denial)

    async def deny(
        self,
        principal: Principal | None,
        code: grpc.StatusCode,
        message: str,
        context: grpc.aio.ServicerContext,
        *,
        model: str | None = None,
        rate_limited: bool = False,
        wait: float | None = None,
    ) -> NoReturn:
        self.audit_denial(principal, code, message, context, model=model, rate_limited=rate_limited)
        trailing = pushback_metadata(wait) if wait is not None else ()
        await context.abort(code, message, trailing_metadata=trailing)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def audit_denial(
        self,
        principal: Principal | None,
        code: grpc.StatusCode,
        message: str,
        context: grpc.aio.ServicerContext,
        *,
        model: str | None = None,
        rate_limited: bool = False,
    ) -> None:
        audit = self._audit
        if audit is not None:
            audit.denied(
                principal,
                self.method,
                code.name,
                request_id=_request_id(context),
                peer=context.peer(),
                model=model,
                message=message,
                rate_limited=rate_limited,
            )

    def stream_place(self, principal: Principal) -> contextlib.AbstractContextManager[Any]:
        limiter = self._limiter
        return limiter.open_stream(principal.name) if limiter is not None else contextlib.nullcontext()

    def record(self, principal: Principal, request: Any, context: grpc.aio.ServicerContext, outcome: str) -> None:
        """A control action's audit line (with its outcome: a status name)."""
        audit = self._audit
        if audit is not None and self.rule is not None and self.rule.action == CONTROL:
            audit.control(
                principal, self.method, request, outcome, request_id=_request_id(context), peer=context.peer()
            )

    # --- the four handler shapes ------------------------------------------------------------------------

    def unary_unary(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        audited = self._audit is not None and self.rule is not None and self.rule.action == CONTROL

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(request, context)
            if not audited:
                return await behaviour(request, context)
            outcome = "UNKNOWN"
            try:
                response = await behaviour(request, context)
                outcome = "OK"
                return response
            except BaseException as exc:
                outcome = _outcome(exc, context)
                raise
            finally:
                self.record(principal, request, context, outcome)

        return unary

    def unary_stream(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = await self.admit(request, context)
            place = await self._open_stream(principal, context)
            with place:
                async for item in _responses(behaviour(request, context)):
                    yield item

        return stream

    def stream_unary(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(_STREAMED, context)
            with await self._open_stream(principal, context):
                return await behaviour(self._checked(principal, requests, context), context)

        return unary

    def stream_stream(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = await self.admit(_STREAMED, context)
            with await self._open_stream(principal, context):
                async for item in _responses(behaviour(self._checked(principal, requests, context), context)):
                    yield item

        return stream

    async def _open_stream(
        self, principal: Principal, context: grpc.aio.ServicerContext
    ) -> contextlib.AbstractContextManager[Any]:
        try:
            return self.stream_place(principal)
        except ResourceExhausted as exc:
            await self.deny(principal, _EXHAUSTED, exc.message, context)

    async def _checked(
        self, principal: Principal, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """A client stream's messages, each authorized for its model and paced by the principal's rate.

        A refused message raises its ServingError here, in the handler's reading, instead of aborting the
        call: the handler then ends with that status after the answers already on their way (an abort
        from the reading side would race the handler's own writes)."""
        limiter = self._limiter
        async for request in requests:
            self.check(principal, request, context)
            if limiter is not None:
                await limiter.pace(principal.name)
            yield request


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's messages, whether it is an async generator or a coroutine using context.write."""
    if inspect.isawaitable(result):
        await result
        return
    try:
        async for item in result:
            yield item
    finally:
        aclose = getattr(result, "aclose", None)
        if aclose is not None:
            await aclose()


def _request_id(context: grpc.aio.ServicerContext) -> str:
    from server.security.audit import request_id_from

    return request_id_from(context.invocation_metadata())


def _outcome(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status name a failed control call ended with (the error interceptor has aborted with it by now)."""
    if isinstance(exc, ServingError):
        return exc.code.name
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"
