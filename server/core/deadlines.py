"""Deadlines: a cancel at the deadline counts as expiry, and the status name a failed call is counted under.

gRPC cancels a call at its deadline by its own clock, which can run a little ahead of the deadline the
server computed when it decoded the request, so a cancellation within ``DEADLINE_SLACK_S`` of the
deadline is an expiry (DEADLINE_EXCEEDED), not a client's cancel.
"""

from __future__ import annotations

import asyncio
import time

from server.core.errors import ServingError

DEADLINE_SLACK_S = 0.010


def expired(deadline: float | None, now: float | None = None) -> bool:
    """Whether ``deadline`` (monotonic seconds, None = none) has passed, allowing gRPC's clock slack."""
    if deadline is None:
        return False
    return (time.monotonic() if now is None else now) >= deadline - DEADLINE_SLACK_S


def outcome_code(exc: BaseException, deadline: float | None) -> str:
    """The status name a failed call is counted under: its own code, DEADLINE_EXCEEDED or CANCELLED for a
    call gRPC ended (at its deadline, or because the client went away), INTERNAL for anything else."""
    if isinstance(exc, ServingError):
        return exc.code.name
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "DEADLINE_EXCEEDED" if expired(deadline) else "CANCELLED"
    return "INTERNAL"
