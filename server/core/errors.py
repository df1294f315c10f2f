"""Errors that carry their gRPC status code; one interceptor turns them into statuses.

Raise these anywhere below the servicer. Anything else that escapes a handler becomes INTERNAL
with a request id, and its traceback goes to the server log only.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """An error with the gRPC status it should be reported as."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServingError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServingError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServingError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(ServingError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServingError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(ServingError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(ServingError):
    code = grpc.StatusCode.UNIMPLEMENTED


class PermissionDenied(ServingError):
    code = grpc.StatusCode.PERMISSION_DENIED
