"""The supervisor's answer to model control and ModelStatistics: the same call to every serving worker.

Control: every worker gets the caller's request bytes at once; all OK → the first worker's reply (and the
call joins the control log, for replay to a restarted worker); any failure → that status, with a message
naming each failing worker ("worker 1: NOT_FOUND: …"). Statistics (inferd.v1 and OIP): the workers that
answered, summed (server/workers/stats_fanout.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from server.workers.control_log import CONTROL_METHODS, STATISTICS_METHODS, ControlLog
from server.workers.worker_mode import forwarded_metadata


@dataclass(frozen=True, slots=True)
class Target:
    """A serving worker: its index and a channel to its private control socket."""

    index: int
    channel: grpc.aio.Channel


@dataclass(frozen=True, slots=True)
class Failure:
    index: int
    code: grpc.StatusCode
    details: str

    def __str__(self) -> str:
        return f"worker {self.index}: {self.code.name}: {self.details}"


async def call_all(
    targets: Sequence[Target], method: str, request: bytes, *, timeout: float | None, metadata: Any = ()
) -> tuple[list[bytes], list[Failure]]:
    """One call per worker, concurrently: the replies in worker order, and the failures."""

    async def one(target: Target) -> bytes | Failure:
        try:
            reply: bytes = await target.channel.unary_unary(method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return Failure(target.index, err.code(), err.details() or "")
        return reply

    results = await asyncio.gather(*(one(t) for t in targets))
    replies = [r for r in results if isinstance(r, bytes)]
    failures = [r for r in results if isinstance(r, Failure)]
    return replies, failures


def failure_status(failures: Sequence[Failure]) -> tuple[grpc.StatusCode, str]:
    """The first failing worker's code; every failing worker named in the message."""
    return failures[0].code, "; ".join(str(f) for f in failures)


class ControlFanout(grpc.GenericRpcHandler):
    """The generic handler on the supervisor's socket (and its --admin-port)."""

    def __init__(
        self,
        targets: Callable[[], list[Target]],
        control_log: ControlLog,
        lock: asyncio.Lock,
        after_change: Callable[[], Awaitable[None]],
        *,
        statistics: bool = True,
        workers: Callable[[], int] | None = None,
    ) -> None:
        """``workers``: how many workers there are (serving or not), for statistics' ``answered/total``."""
        self._targets = targets
        self._workers = workers
        self._log = control_log
        self._lock = lock
        self._after_change = after_change
        self._statistics = statistics

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in CONTROL_METHODS:
            return grpc.unary_unary_rpc_method_handler(self._control(method))
        if method in STATISTICS_METHODS and self._statistics:
            return grpc.unary_unary_rpc_method_handler(self._statistics_call(method))
        return None

    def _control(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def control(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            # one control call at a time, and none while a restarted worker replays the log and opens
            async with self._lock:
                targets = self._targets()
                if not targets:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "no worker is serving (all are restarting)")
                replies, failures = await call_all(
                    targets,
                    method,
                    request,
                    timeout=context.time_remaining(),
                    metadata=forwarded_metadata(context.invocation_metadata()),
                )
                if not failures:
                    self._log.record(method, request)
                await self._after_change()  # health says what the workers now serve before the caller hears
            if failures:
                await context.abort(*failure_status(failures))
            return replies[0]

        return control

    def _statistics_call(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        from server.workers import stats_fanout  # it builds on this module's call_all

        async def statistics(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            targets = self._targets()
            total = self._workers() if self._workers is not None else len(targets)
            return await stats_fanout.answer(targets, total, method, request, context)

        return statistics
