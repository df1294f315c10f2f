"""Finish, in a task, a coroutine that was started on the caller's stack.

The batcher's fast path starts an engine call right in the caller (``call.send(None)``): an inline
engine call is then over without a task or a loop iteration (a task plus ``shield`` cost ~13 µs a
request, four times the whole fast path). Only a call that suspends (on an executor thread) is handed
to a task, so that a caller cancelled mid-call can leave while the call runs on to its end. Python
3.12's eager task factory does the same for a whole loop; this does it for one call on 3.11.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def resume(call: Coroutine[Any, Any, T], waiting_on: object) -> T:
    """Await ``call``, which has already run up to its first suspension, where it yielded ``waiting_on``.

    Wrap it in a task: ``loop.create_task(resume(call, waiting_on))``.
    """
    return await _delegate(call, waiting_on)


@types.coroutine
def _delegate(call: Coroutine[Any, Any, T], waiting_on: object) -> Generator[Any, Any, T]:
    """``yield from call`` for a started coroutine: hand its pending future to the task first, then
    pass every value or exception the task sends through, until the coroutine returns."""
    yielded = waiting_on
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            call.close()
            raise
        except BaseException as exc:  # thrown in by the task (a cancel): the coroutine sees it
            try:
                yielded = call.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = call.send(sent)
            except StopIteration as stop:
                return stop.value
