"""One loaded model version: its engine, the executor that runs it, its state and in-flight count.

Lifecycle: LOADING → WARMING → READY → DRAINING → UNLOADED, or FAILED with the reason. Engine choice
walks the configured preference list; why an engine was skipped is kept in ``engine_notes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engines.base import (
    BACKENDS,
    Engine,
    EngineError,
    LoadSpec,
    backend_for_artifact,
    check_outputs,
    random_inputs,
    zero_inputs,
)
from engines.parity import parity_config, parity_inputs
from engines.selection import NoEngineServes, runs_on_gpu, select_engine
from server.core.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from server.core.types import ParamValue, SlotState
from server.models import gpu
from server.models.config import ModelSpec, WarmupSpec
from server.models.validation import InputValidator
from server.scheduling.batcher import Batcher
from server.scheduling.streams import StreamServer, streams_for
from server.telemetry.stats import VersionStats

log = logging.getLogger("inferd.slot")

#: "auto" execution runs engine calls on the event loop while they average under this (a thread hop
#: costs more than the call itself for tiny models; longer calls would stall other requests).
INLINE_BELOW_NS = 100_000
#: Niceness of the threads that load and warm models (higher = yields more CPU to serving).
LOADER_NICENESS = 15


class Slot:
    def __init__(
        self,
        spec: ModelSpec,
        version: int,
        version_dir: Path,
        device: str = "cpu",
        engine_defaults: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
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
        self.in_flight = 0
        #: the version folder's files when this slot was made (lifecycle reloads the version when it changes)
        self.artifact_fingerprint = ""
        self.validator = InputValidator(spec)
        self.stats = VersionStats()
        #: moving average of engine call time; "auto" execution runs calls inline while it stays small
        self._compute_ewma_ns = float(INLINE_BELOW_NS)
        self.batcher: Batcher | None = None
        #: PredictStream server for generative and generator models (server/streaming.py); None = chunked
        self.streams: StreamServer | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(
            max_workers=spec.instance_count, thread_name_prefix=f"{spec.name}-v{version}"
        )

    def __repr__(self) -> str:
        return f"Slot({self.model!r}, v{self.version}, {self.state.value})"

    @property
    def ready(self) -> bool:
        return self.state is SlotState.READY

    def _candidates(self) -> list[str]:
        if self.spec.engines:
            return list(self.spec.engines)
        found = backend_for_artifact(self.version_dir)
        return [found] if found else []

    def _load_spec(self, name: str, artifact: Path) -> LoadSpec:
        return LoadSpec(
            model_name=self.model,
            version=self.version,
            artifact=artifact,
            signature=self.spec.signature,
            max_batch_size=self.spec.max_batch_size,
            parameters=self.parameters,
            device=self.device,
            instances=self.spec.instance_count,
        )

    def _admit(self, name: str, spec: LoadSpec) -> str | None:
        """The GPU memory budget, for engines that would place the model on a GPU."""
        return gpu.admit(spec) if runs_on_gpu(name, spec) else None

    def _load_blocking(self) -> Engine:
        """Walk the preference list: the first engine that loads and matches the reference serves."""
        candidates = self._candidates()
        if not candidates:
            artefacts = ", ".join(b.artifact for b in BACKENDS.values())
            raise EngineError(f"no model artefact in {self.version_dir} (expected one of {artefacts})")
        warmup = [(w.kind, w.batch_sizes) for w in self.spec.warmup]
        try:
            selection = select_engine(
                candidates,
                self.version_dir,
                self._load_spec,
                parameters=self.parameters,
                parity=parity_config(self.parameters),
                parity_batches=lambda: parity_inputs(self.spec.signature, warmup, self.spec.max_batch_size),
                output_names=[s.name for s in self.spec.signature.outputs],
                explicit_reference="parity_reference" in self.parameters,
                admit=self._admit,
                where=f"model {self.model} version {self.version}",
            )
        except NoEngineServes as exc:
            self.engine_notes.extend(exc.notes)
            raise
        self.engine_notes.extend(selection.notes)
        self.backend = selection.backend
        return selection.engine

    def _warm_blocking(self, engine: Engine) -> None:
        """Synthetic requests before READY, so lazy allocation and kernel selection happen before traffic.

        The config's ``warmup`` entries decide (zero or random inputs, batch sizes, repetitions); without
        any, one zero request of one row runs. Every output is checked against the signature.
        Streaming-only engines warm themselves (a generative engine generates a couple of tokens).
        """
        if getattr(engine, "streaming_only", False):
            warm = getattr(engine, "warmup", None)
            if callable(warm):
                self.stats.warmup_count += int(warm())
            return
        batched = self.spec.max_batch_size > 0
        plan = self.spec.warmup or (WarmupSpec(),)
        for step, warm in enumerate(plan):
            for size in warm.batch_sizes if batched else (1,):
                for repeat in range(warm.count):
                    if warm.kind == "random":
                        inputs = random_inputs(self.spec.signature, size, seed=step * 1000 + repeat)
                    else:
                        inputs = zero_inputs(self.spec.signature, size)
                    outputs = engine.infer(inputs)
                    check_outputs(self.spec.signature, outputs, batch=size if batched else None)
                    self.stats.warmup_count += 1

    async def load(self) -> None:
        """Load and warm the engine off the event loop; ends READY or FAILED (never raises)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        # Loading and warm-up run on a low-priority thread so that a swap steals as little CPU as
        # possible from the models that are serving meanwhile.
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"load-{self.model}", initializer=_lower_priority)
        try:
            engine = await loop.run_in_executor(loader, self._load_blocking)
            self.state = SlotState.WARMING
            t0 = time.perf_counter_ns()
            await loop.run_in_executor(loader, self._warm_blocking, engine)
            self._compute_ewma_ns = (time.perf_counter_ns() - t0) / max(1, self.stats.warmup_count)
        except Exception as exc:  # a broken model must never take the server down
            self.state = SlotState.FAILED
            self.reason = str(exc) or type(exc).__name__
            log.error("model %s version %s FAILED: %s", self.model, self.version, self.reason)
            return
        finally:
            loader.shutdown(wait=False)
        self.engine = engine
        if self.spec.batching is not None:
            self.batcher = Batcher(
                self.model,
                self.spec.batching,
                self.spec.max_batch_size,
                self.spec.instance_count,
                self._run,
                self.stats,
            )
        self.streams = streams_for(
            self.model,
            engine,
            self.spec.proto.streaming,
            self.validator.output_names,
            self.stats.streaming,
            self._executor,
            self.spec.execution,
        )
        self.state = SlotState.READY
        log.info(
            "model %s version %s READY on %s in %.2fs",
            self.model,
            self.version,
            self.backend,
            time.monotonic() - started,
        )

    def _inline(self) -> bool:
        mode = self.spec.execution
        return mode == "inline" or (mode == "auto" and self._compute_ewma_ns < INLINE_BELOW_NS)

    async def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One engine call: inline on the loop for tiny models (no thread hop), else on an executor thread."""
        engine = self.engine
        if engine is None:
            raise Unavailable(f"model '{self.model}' version {self.version} is {self.state.value}")
        started = time.perf_counter_ns()
        if self._inline():
            outputs = engine.infer(inputs)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, engine.infer, inputs)
        self._compute_ewma_ns += (time.perf_counter_ns() - started - self._compute_ewma_ns) * 0.1
        return outputs

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
        rows: int = 1,
        parameters: Mapping[str, ParamValue] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request, through the batcher when the model has one; expired work never runs."""
        if self.state not in (SlotState.READY, SlotState.DRAINING):
            raise Unavailable(f"model '{self.model}' version {self.version} is {self.state.value}")
        if self.streaming_only:
            raise FailedPrecondition(
                f"model '{self.model}' only streams its answer: call PredictStream (SDK predict_stream or "
                "generate, `inferd generate`), not Predict"
            )
        self.in_flight += 1
        self._idle.clear()
        try:
            batcher = self.batcher
            if batcher is not None:
                priority = batcher.priority_of(parameters) if parameters else batcher.default_priority
                return await batcher.submit(inputs, rows, deadline, priority)
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.expired_before_run += 1
                raise DeadlineExceeded(f"deadline expired before model '{self.model}' ran")
            t0 = time.perf_counter_ns()
            try:
                return await self._run(inputs)
            finally:
                self.stats.record_batch(rows, time.perf_counter_ns() - t0)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    @property
    def streaming_only(self) -> bool:
        """Whether the engine answers PredictStream only (generative, or a python model with just infer_stream)."""
        return bool(getattr(self.engine, "streaming_only", False))

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count a whole PredictStream as in flight, so a drain waits for open streams, not just their current step."""
        if self.state not in (SlotState.READY, SlotState.DRAINING):
            raise Unavailable(f"model '{self.model}' version {self.version} is {self.state.value}")
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def drain_and_close(self, reason: str = "unloaded") -> None:
        """Stop taking work, let in-flight requests and open streams finish, then release the engine."""
        if self.state in (SlotState.READY, SlotState.WARMING):
            self.state = SlotState.DRAINING
        await self._idle.wait()
        if self.batcher is not None:
            await self.batcher.close()
        if self.streams is not None:
            await self.streams.close()
        engine, self.engine = self.engine, None
        loop = asyncio.get_running_loop()
        if engine is not None:
            await loop.run_in_executor(self._executor, engine.close)
        self._executor.shutdown(wait=False)
        if self.state is not SlotState.FAILED:
            self.state = SlotState.UNLOADED
            self.reason = reason


def _lower_priority() -> None:
    """Nice the calling thread (Linux: per-thread) so model loads yield the CPU to serving threads."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)
