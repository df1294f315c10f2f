"""Loading one model version: pick the engine from the preference list, then warm it, off the event loop.

Both steps run on a low-priority (niced) thread so that a swap steals as little CPU as possible from
the models that serve meanwhile. The loader returns plain results; the Slot owns the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
from server.models import gpu
from server.models.config import ModelSpec, WarmupSpec

#: Niceness of the threads that load and warm models (higher = yields more CPU to serving).
LOADER_NICENESS = 15


@dataclass
class Loaded:
    """What a load produced: the engine, the backend that serves, and how warm-up went."""

    engine: Engine
    backend: str
    notes: list[str] = field(default_factory=list)
    warmup_calls: int = 0
    #: mean warm-up call time, the first estimate of an engine call's cost
    warmup_ns: float = 0.0


class LoadFailed(Exception):
    """The version cannot serve; ``notes`` says why each engine was skipped."""

    def __init__(self, reason: str, notes: list[str]) -> None:
        super().__init__(reason)
        self.notes = notes


class Loader:
    """Loads one version of ``spec`` from ``version_dir`` (see the module docstring)."""

    def __init__(
        self, spec: ModelSpec, version: int, version_dir: Path, device: str, parameters: Mapping[str, str]
    ) -> None:
        self.spec = spec
        self.version = version
        self.version_dir = version_dir
        self.device = device
        self.parameters = dict(parameters)

    def _load_spec(self, name: str, artifact: Path) -> LoadSpec:
        return LoadSpec(
            model_name=self.spec.name,
            version=self.version,
            artifact=artifact,
            signature=self.spec.signature,
            max_batch_size=self.spec.max_batch_size,
            parameters=self.parameters,
            device=self.device,
            instances=self.spec.instance_count,
        )

    def _candidates(self) -> list[str]:
        if self.spec.engines:
            return list(self.spec.engines)
        found = backend_for_artifact(self.version_dir)
        return [found] if found else []

    def _admit(self, name: str, spec: LoadSpec) -> str | None:
        """The GPU memory budget, for engines that would place the model on a GPU."""
        return gpu.admit(spec) if runs_on_gpu(name, spec) else None

    def select(self) -> Loaded:
        """Walk the preference list: the first engine that loads and matches the reference serves."""
        candidates = self._candidates()
        if not candidates:
            artefacts = ", ".join(b.artifact for b in BACKENDS.values())
            raise LoadFailed(f"no model artefact in {self.version_dir} (expected one of {artefacts})", [])
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
                where=f"model {self.spec.name} version {self.version}",
            )
        except NoEngineServes as exc:
            raise LoadFailed(str(exc) or type(exc).__name__, list(exc.notes)) from exc
        except EngineError as exc:
            raise LoadFailed(str(exc) or type(exc).__name__, []) from exc
        return Loaded(selection.engine, selection.backend, list(selection.notes))

    def warm(self, loaded: Loaded) -> None:
        """Synthetic requests before READY, so lazy allocation and kernel selection happen before traffic.

        The config's ``warmup`` entries decide (zero or random inputs, batch sizes, repetitions); without
        any, one zero request of one row runs. Every output is checked against the signature.
        Streaming-only engines warm themselves (a generative engine generates a couple of tokens).
        """
        engine = loaded.engine
        started = time.perf_counter_ns()
        if getattr(engine, "streaming_only", False):
            warm = getattr(engine, "warmup", None)
            if callable(warm):
                loaded.warmup_calls += int(warm())
            return
        batched = self.spec.max_batch_size > 0
        plan = self.spec.warmup or (WarmupSpec(),)
        for step, warm_spec in enumerate(plan):
            for size in warm_spec.batch_sizes if batched else (1,):
                for repeat in range(warm_spec.count):
                    if warm_spec.kind == "random":
                        inputs = random_inputs(self.spec.signature, size, seed=step * 1000 + repeat)
                    else:
                        inputs = zero_inputs(self.spec.signature, size)
                    outputs = engine.infer(inputs)
                    check_outputs(self.spec.signature, outputs, batch=size if batched else None)
                    loaded.warmup_calls += 1
        loaded.warmup_ns = (time.perf_counter_ns() - started) / max(1, loaded.warmup_calls)

    def _load_and_warm(self) -> Loaded:
        loaded = self.select()
        try:
            self.warm(loaded)
        except BaseException:
            with contextlib.suppress(Exception):  # the warm-up error is the one worth reporting
                loaded.engine.close()
            raise
        return loaded

    async def load(self) -> Loaded:
        """Select and warm on a niced thread. Cancelling the caller does not leak the engine: a load that
        completes after its caller left closes what it made."""
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"load-{self.spec.name}", initializer=_nice)
        future = loader.submit(self._load_and_warm)
        loader.shutdown(wait=False)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_orphan)
            raise


def _close_orphan(future: Future[Loaded]) -> None:
    """Close the engine of a load nobody waits for any more."""
    if future.cancelled() or future.exception() is not None:
        return
    with contextlib.suppress(Exception):
        future.result().engine.close()


def _nice() -> None:
    """Nice the calling thread (Linux: per-thread) so model loads yield the CPU to serving threads."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)
