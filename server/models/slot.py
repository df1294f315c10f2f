"""One loaded model version: its state, its engine calls, its batcher and stream server, its in-flight count.

Lifecycle: LOADING → WARMING → READY → DRAINING → UNLOADED, or FAILED with the reason. Loading and
warm-up are the Loader's (server/models/loader.py); where engine calls run is EngineCalls'
(server/scheduling/execution.py).

Closing is gated so nothing can slip in after the drain decided the slot is idle: ``drain_and_close``
waits until no request or stream is in flight (bounded by ``timeout``), closes the gate in the same
loop step that saw it idle — later arrivals get UNAVAILABLE, which clients retry — then closes the
batcher and the stream server, and closes the engine only when no engine call on it is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import Engine
from server.core.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from server.core.types import ParamValue, SlotState
from server.models.config import ModelSpec
from server.models.loader import Loader, LoadFailed, LoadPolicy
from server.models.validation import InputValidator
from server.quality.drift import DriftError, DriftMonitor
from server.quality.feedback import FeedbackScores
from server.scheduling.batcher import Batcher
from server.scheduling.execution import EngineCalls
from server.scheduling.streams import StreamServer, streams_for
from server.telemetry.calls import current_call, stamp_batch
from server.telemetry.stats import VersionStats

log = logging.getLogger("inferd.slot")

#: how long an unloaded or replaced version waits for its requests and streams by default
DEFAULT_DRAIN_TIMEOUT_S = 30.0


class Slot:
    def __init__(
        self,
        spec: ModelSpec,
        version: int,
        version_dir: Path,
        device: str = "cpu",
        engine_defaults: Mapping[str, str] | None = None,
        policy: LoadPolicy | None = None,
    ) -> None:
        self.spec = spec
        #: the repository root its files must stay under and the engines allowed (None: the version's grandparent)
        self.policy = policy
        self.model = spec.name
        self.version = version
        self.version_dir = version_dir
        self.device = device
        #: server-wide engine parameters (e.g. from --trt-auto-build); the model's own parameters win
        self.parameters: dict[str, str] = {**(engine_defaults or {}), **spec.parameters}
        self.state = SlotState.LOADING
        self.reason = ""
        self.backend = ""
        self.engine_notes: list[str] = []
        self.engine: Engine | None = None
        #: requests and streams in flight (a stream counts from open to its last message)
        self.in_flight = 0
        #: the version folder's files when this slot was made (the manager reloads the version when it changes)
        self.artifact_fingerprint = ""
        #: seconds the load and warm-up took (0 until READY)
        self.load_seconds = 0.0
        self.validator = InputValidator(spec)
        self.stats = VersionStats()
        self.calls = EngineCalls(spec.name, version, spec.execution, spec.instance_count)
        self.batcher: Batcher | None = None
        #: PredictStream server for generative and generator models; None = chunked outputs
        self.streams: StreamServer | None = None
        #: live input drift against the reference profile (config `drift {}`); None = off
        self.drift: DriftMonitor | None = None
        #: scores against ground truth from Feedback (config `feedback {}`); None = off
        self.feedback = FeedbackScores(spec.feedback.kind) if spec.feedback is not None else None
        #: closed once the drain saw the slot idle (or gave up): no new work is admitted after that
        self._gate_closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"Slot({self.model!r}, v{self.version}, {self.state.value})"

    @property
    def ready(self) -> bool:
        return self.state is SlotState.READY

    @property
    def queued(self) -> int:
        """Requests waiting in the batch queue now (the queue-depth metric)."""
        batcher = self.batcher
        return batcher.queued if batcher is not None else 0

    @property
    def queue_capacity(self) -> int:
        """Requests the batch queue holds at most (0: the version does not batch)."""
        batcher = self.batcher
        return batcher.max_queue_size if batcher is not None else 0

    async def load(self) -> None:
        """Load and warm the engine off the event loop; ends READY or FAILED (never raises but CancelledError)."""
        started = time.monotonic()
        if self.spec.drift is not None:
            try:  # before the engine loads: a bad reference fails the load cheaply, with its reason
                self.drift = DriftMonitor.for_version(
                    self.model,
                    self.version,
                    self.spec.drift,
                    self.version_dir,
                    {t.name for t in self.spec.signature.inputs},
                    {t.name for t in self.spec.signature.outputs},
                )
            except DriftError as exc:
                self._fail(str(exc))
                return
        loader = Loader(self.spec, self.version, self.version_dir, self.device, self.parameters, self.policy)
        try:
            loaded = await loader.load()
        except asyncio.CancelledError:
            self._fail("the load was cancelled")
            raise
        except LoadFailed as exc:
            self.engine_notes.extend(exc.notes)
            self._fail(str(exc))
            return
        except Exception as exc:  # a broken model must never take the server down
            self._fail(str(exc) or type(exc).__name__)
            return
        self.engine_notes.extend(loaded.notes)
        self.backend = loaded.backend
        self.stats.warmup_count += loaded.warmup_calls
        if loaded.warmup_ns:
            self.calls.note_cost(loaded.warmup_ns)
        engine = self.engine = loaded.engine
        if self.spec.batching is not None:
            self.batcher = Batcher(
                self.model,
                self.spec.batching,
                self.spec.max_batch_size,
                self.spec.instance_count,
                self._run,
                self.stats,
                version=self.version,
                runs_inline=self.calls.runs_inline,
            )
        self.streams = streams_for(
            self.model, engine, self.spec.streaming, self.validator.output_names, self.stats.streaming, self.calls
        )
        if self.drift is not None:
            self.drift.start()
        self.state = SlotState.READY
        self.load_seconds = time.monotonic() - started
        log.info("model %s version %s READY on %s in %.2fs", self.model, self.version, self.backend, self.load_seconds)

    def _fail(self, reason: str) -> None:
        self.state = SlotState.FAILED
        self.reason = reason
        self._gate_closed = True
        log.error("model %s version %s FAILED: %s", self.model, self.version, reason)

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Coroutine[Any, Any, dict[str, np.ndarray]]:
        """One engine call, under the version's execution policy (the batcher awaits it; a plain function
        handing back the call's coroutine, so the batcher's fast path has one frame less)."""
        engine = self.engine
        if engine is None:
            raise Unavailable(f"model '{self.model}' version {self.version} is {self.state.value}")
        return self.calls.run(engine.infer, inputs)

    def _admit(self) -> None:
        """Count one more request or stream in flight, or refuse it: not serving, or the gate is closed."""
        if self._gate_closed or self.state not in (SlotState.READY, SlotState.DRAINING):
            state = "unloading" if self.state is SlotState.DRAINING else self.state.value
            raise Unavailable(f"model '{self.model}' version {self.version} is {state}; retry")
        self.in_flight += 1
        self._idle.clear()

    def _release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
        rows: int = 1,
        parameters: Mapping[str, ParamValue] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request, through the batcher when the model has one; expired work never runs."""
        if self.streaming_only:
            raise FailedPrecondition(
                f"model '{self.model}' only streams its answer: call PredictStream (SDK predict_stream or "
                "generate, `inferd generate`), not Predict"
            )
        self._admit()
        try:
            batcher = self.batcher
            if batcher is not None:
                priority = batcher.priority_of(parameters) if parameters else batcher.default_priority
                return self._observed(inputs, await batcher.submit(inputs, rows, deadline, priority), rows)
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.expired_before_run += 1
                raise DeadlineExceeded(f"deadline expired before model '{self.model}' ran")
            record = current_call.get()
            t0 = time.perf_counter_ns()
            started_unix = time.time_ns() if record is not None else 0
            engine = self.engine
            if engine is None:
                raise Unavailable(f"model '{self.model}' version {self.version} is {self.state.value}")
            try:
                return self._observed(inputs, await self.calls.run(engine.infer, inputs), rows)
            finally:
                elapsed = time.perf_counter_ns() - t0
                self.stats.record_batch(rows, elapsed)
                if record is not None:
                    stamp_batch((record,), rows, started_unix, elapsed)
        finally:
            self._release()

    def _observed(
        self, inputs: Mapping[str, np.ndarray], outputs: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        """Hand a served request to the drift monitor (a random draw; sampled ones keep references only)."""
        if self.drift is not None:
            self.drift.observe(inputs, outputs, rows)
        return outputs

    @property
    def streaming_only(self) -> bool:
        """Whether the engine answers PredictStream only (generative, or a python model with just infer_stream)."""
        return bool(getattr(self.engine, "streaming_only", False))

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count a whole PredictStream as in flight, so a drain waits for open streams, not just their current step."""
        self._admit()
        try:
            yield
        finally:
            self._release()

    async def _wait_idle(self, timeout: float | None) -> bool:
        """Until nothing is in flight (True), or ``timeout`` seconds pass (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.in_flight:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), left)
        return True

    async def drain_and_close(self, reason: str = "unloaded", timeout: float | None = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        """Stop taking work, let in-flight requests and open streams finish (up to ``timeout`` seconds, then
        end them with UNAVAILABLE), then release the engine once no call on it runs."""
        if self.state in (SlotState.READY, SlotState.WARMING):
            self.state = SlotState.DRAINING
        idle = await self._wait_idle(timeout)
        self._gate_closed = True  # same loop step as the idle check: nothing slips in between
        if not idle:
            log.warning(
                "model %s version %d: drain bound of %.1fs ran out with %d request(s)/stream(s) still open; "
                "ending them with UNAVAILABLE",
                self.model,
                self.version,
                timeout or 0.0,
                self.in_flight,
            )
        if self.batcher is not None:
            await self.batcher.close()
        if self.streams is not None:
            await self.streams.close()
        if not idle and not await self._wait_idle(1.0):
            # what is left is blocked writing to a client that stopped reading: it holds its own computed
            # message, not the engine, so the engine can still be closed safely below
            log.warning(
                "model %s version %d: %d stream(s) still blocked on clients that stopped reading; closing anyway",
                self.model,
                self.version,
                self.in_flight,
            )
        if self.drift is not None:
            await self.drift.stop()
        engine, self.engine = self.engine, None
        await self.calls.close(engine.close if engine is not None else None)
        if self.state is not SlotState.FAILED:
            self.state = SlotState.UNLOADED
            self.reason = reason
        log.info("model %s version %d closed (%s)", self.model, self.version, reason)
