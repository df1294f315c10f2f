"""Typed exceptions for failed calls, one class per gRPC status code a caller is likely to handle.

Every ``grpc.RpcError`` the SDK sees is turned into one of these by :func:`from_rpc_error`, so callers
can write ``except inferd.errors.NotFound`` instead of comparing status codes, and still read the code,
the server's message and its trailing metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import grpc

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InferdError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]

#: The server ends messages of unexpected errors with "(request id <id>)" so logs can be matched.
_REQUEST_ID = re.compile(r"\(request id ([^()\s]+)\)")

Metadata = tuple[tuple[str, "str | bytes"], ...]


class InferdError(Exception):
    """A call that failed, with its gRPC status code and the server's message.

    ``str(error)`` reads ``"NOT_FOUND: model 'x' not found"``. Subclasses fix the code, so
    ``NotFound("model 'x' not found")`` needs no code argument.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        *,
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
        debug_error_string: str | None = None,
    ) -> None:
        code = self.default_code if code is None else code
        # args are (message, code) so that pickling rebuilds an equal error.
        super().__init__(message, code)
        self.code: grpc.StatusCode = code
        self.message: str = message
        match = _REQUEST_ID.search(message)
        self.request_id: str | None = match.group(1) if match else None
        self.trailing_metadata: Metadata = tuple((str(k), v) for k, v in trailing_metadata)
        self.debug_error_string = debug_error_string

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.code})"


class InvalidArgument(InferdError):
    """The request is malformed: unknown input, wrong dtype or shape (the message names the tensor)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(InferdError):
    """The model, version or label does not exist."""

    default_code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(InferdError):
    """The model's queue is full or a message is too large; retrying later may succeed."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(InferdError):
    """The call's timeout passed before the answer arrived."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(InferdError):
    """The call was cancelled (by the client, or by the server shutting down)."""

    default_code = grpc.StatusCode.CANCELLED


class FailedPrecondition(InferdError):
    """The model exists but cannot serve this now, e.g. no version is READY or it is streaming-only."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(InferdError):
    """The server cannot be reached or is draining; safe to retry elsewhere."""

    default_code = grpc.StatusCode.UNAVAILABLE


class Internal(InferdError):
    """The server failed unexpectedly; ``request_id`` matches its logged traceback."""

    default_code = grpc.StatusCode.INTERNAL


class Unimplemented(InferdError):
    """The server does not offer this method (e.g. an older server)."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class PermissionDenied(InferdError):
    """The caller is known but not allowed to do this."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(InferdError):
    """The call carried no valid credentials."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class AlreadyExists(InferdError):
    """What the call would create is there already (e.g. feedback for a request id already scored)."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


_BY_CODE: dict[grpc.StatusCode, type[InferdError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        DeadlineExceeded,
        Cancelled,
        FailedPrecondition,
        Unavailable,
        Internal,
        Unimplemented,
        PermissionDenied,
        Unauthenticated,
        AlreadyExists,
    )
}


def error_class(code: grpc.StatusCode) -> type[InferdError]:
    """The exception class for a status code; InferdError for codes without their own class."""
    return _BY_CODE.get(code, InferdError)


def from_rpc_error(err: grpc.RpcError) -> InferdError:
    """Convert an error raised by grpc (sync or aio) into the matching InferdError subclass."""
    code = _call(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = _call(err, "details")
    message = details if isinstance(details, str) else str(err)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        message += _size_hint(message)
    metadata = _call(err, "trailing_metadata") or ()
    debug = _call(err, "debug_error_string")
    return error_class(code)(
        message,
        code,
        trailing_metadata=tuple((m[0], m[1]) for m in metadata),
        debug_error_string=debug if isinstance(debug, str) else None,
    )


def _size_hint(message: str) -> str:
    """Name the setting behind grpc's own size errors ("CLIENT: Sent message larger than max (N vs. M)")."""
    if "larger than max" not in message:
        return ""
    if message.startswith("CLIENT:"):
        return " (the client's limit: raise it with Client(..., max_message_bytes=N))"
    return " (the server's limit: inferd serve --max-receive-message-mb / --max-send-message-mb)"


def _call(err: grpc.RpcError, method: str) -> Any:
    """Call an accessor that grpc.Call and AioRpcError have but a bare RpcError lacks."""
    accessor = getattr(err, method, None)
    if accessor is None:
        return None
    try:
        return accessor()
    except Exception:  # an accessor on a half-built call must not hide the real error
        return None
