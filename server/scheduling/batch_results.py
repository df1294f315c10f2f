"""A batch's outcome handed back to its callers: each its own rows, or the error; and which errors are
worth rerunning the members alone for (the batcher's culprit isolation)."""

from __future__ import annotations

import numpy as np

from server.core.errors import InvalidArgument, ServingError
from server.scheduling.batch_queue import Pending

Outputs = dict[str, np.ndarray]


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
