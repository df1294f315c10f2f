"""A batch's outcome handed back to its callers: each its own rows, or the error; and, when a batch of
several requests fails, finding the request(s) it failed on.

A failed batch. When an engine call on a batch of several requests fails with an error that may be
one request's fault (the engine's INVALID_ARGUMENT, or any error that is not a serving status such as
UNAVAILABLE), every member still waiting is **rerun alone**, in order, on the instance the batch held,
and gets the outcome of its own call: the bad request fails with its own error, the others get their
results. Rerunning each member alone was chosen over bisecting because batches are small (at most
``max_batch_size`` requests), failures are rare, and it is the cheaper search for the engines that
make batching matter on CPU, whose cost is per row: it reruns each row once (bisecting reruns about
twice as many rows to find one culprit, and more for several). Bisecting saves calls only where a call's
fixed cost dominates, and even there it needs as many calls as members once several are bad. It is
also bounded by construction: one extra call per member, never a retry of a lone request, and a
member whose deadline passes while it waits for its turn fails with DEADLINE_EXCEEDED instead of
running. Reruns are counted in ``VersionStats.batch_reruns`` (and as engine calls in the batch stats).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from server.core.errors import DeadlineExceeded, InvalidArgument, ServingError
from server.scheduling.batch_queue import Arrays, Pending
from server.telemetry.calls import CallRecord
from server.telemetry.stats import VersionStats

Outputs = dict[str, np.ndarray]
#: one engine call on the instance the batch held: (inputs, rows, the call records it serves)
EngineCall = Callable[[Arrays, int, Sequence[CallRecord]], Awaitable[Outputs]]


def may_be_one_requests_fault(exc: BaseException) -> bool:
    """Whether a failed batch is worth splitting: the engine's own input error, or an unclassified one.

    A serving status other than INVALID_ARGUMENT (UNAVAILABLE while the version unloads, say) is about
    the engine or the server, and rerunning the members would only repeat it.
    """
    return isinstance(exc, InvalidArgument) or not isinstance(exc, ServingError)


def fail(batch: list[Pending], exc: Exception) -> None:
    """Every member still waiting gets ``exc`` (a caller that left is skipped)."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)


def resolve(model: str, batch: list[Pending], outputs: Outputs, rows: int) -> None:
    """Each member still waiting gets its own rows of ``outputs``; RuntimeError (nobody's request at
    fault) when the model answered another number of rows than the batch had."""
    for name, array in outputs.items():
        if array.shape[:1] != (rows,):
            raise RuntimeError(
                f"model '{model}' returned {array.shape[0] if array.ndim else 0} rows of '{name}' for a batch of {rows}"
            )
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(outputs)
        return
    offset = 0
    for pending in batch:
        end = offset + pending.rows
        if not pending.future.done():
            pending.future.set_result({name: array[offset:end] for name, array in outputs.items()})
        offset = end


async def rerun_alone(model: str, batch: list[Pending], call: EngineCall, stats: VersionStats) -> None:
    """Each member of a failed batch still waiting runs once, alone, in order (see the module doc); its
    deadline keeps running while it waits for its turn."""

    def expire(pending: Pending) -> None:
        pending.timer = None
        if not pending.future.done():
            pending.future.set_exception(
                DeadlineExceeded(f"deadline expired while model '{model}' reran its failed batch one request at a time")
            )

    loop = asyncio.get_running_loop()
    now = time.monotonic()
    for pending in batch:
        if pending.deadline is not None and not pending.future.done():
            pending.timer = loop.call_at(loop.time() + (pending.deadline - now), expire, pending)
    for pending in batch:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.future.done():  # its caller left, or its deadline passed while it waited
            continue
        if pending.deadline is not None and time.monotonic() >= pending.deadline:
            expire(pending)
            continue
        stats.batch_reruns += 1
        try:
            members = (pending.record,) if pending.record is not None else ()
            outputs = await call(pending.inputs, pending.rows, members)
            resolve(model, [pending], outputs, pending.rows)
        except Exception as lone:
            fail([pending], lone)
