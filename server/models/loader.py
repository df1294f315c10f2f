"""Loading one model version: pick the engine from the preference list, then warm it, off the event loop.

Both steps run on a low-priority (niced) thread so that a swap steals as little CPU as possible from
the models that serve meanwhile. The loader returns plain results; the Slot owns the state machine.

Before any engine opens a file, the server's :class:`LoadPolicy` applies: nothing in the version
folder may resolve outside the repository root (a symlink out fails the version, naming the file), and
only the engines the operator allows (``inferd serve --allowed-engines``) may serve. Failure reasons
and engine notes are what clients read (model metadata, ``inferd models``), so paths in them are made
relative to the repository root; the log keeps the original text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
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
    outside_reason,
    random_inputs,
    zero_inputs,
)
from engines.parity import parity_config, parity_inputs
from engines.samples import SAMPLES_FILE, Samples, load_samples, sample_batch, sample_rows
from engines.selection import NoEngineServes, runs_on_gpu, select_engine
from server.core.echo import public
from server.models import gpu
from server.models.config import ModelSpec, WarmupSpec

log = logging.getLogger("inferd.loader")

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


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """What the server lets a version load: files under ``root`` only, and engines in ``allowed_engines``
    (None = every engine)."""

    root: Path
    allowed_engines: frozenset[str] | None = None

    @staticmethod
    def of(root: Path, allowed_engines: Collection[str] | None = None) -> LoadPolicy:
        return LoadPolicy(root.resolve(), None if allowed_engines is None else frozenset(allowed_engines))

    def allows(self, engine: str) -> bool:
        return self.allowed_engines is None or engine in self.allowed_engines

    def refusal(self, engine: str) -> str:
        allowed = ",".join(sorted(self.allowed_engines or ())) or "none"
        return f"engine {engine} is not allowed on this server (--allowed-engines {allowed})"


def confinement_problem(version_dir: Path, root: Path) -> str | None:
    """Why a version folder may not be loaded: the folder or an entry in it resolves outside ``root``.

    Only symlinks can lead out, so only they are resolved; a folder linked from inside the repository is
    walked too (once: links that loop are not followed again). Hard links cannot be told apart from
    ordinary files and are not checked.
    """
    reason = outside_reason(version_dir, root)
    if reason is not None:
        return reason
    seen: set[str] = set()
    for folder, dirs, files in os.walk(version_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        for entry in sorted([*dirs, *files]):
            path = Path(folder) / entry
            if path.is_symlink():
                reason = outside_reason(path, root)
                if reason is not None:
                    return reason  # a folder that leads out is never walked: this returns first
    return None


class LoadFailed(Exception):
    """The version cannot serve; ``notes`` says why each engine was skipped."""

    def __init__(self, reason: str, notes: list[str]) -> None:
        super().__init__(reason)
        self.notes = notes


class Loader:
    """Loads one version of ``spec`` from ``version_dir`` (see the module docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        version: int,
        version_dir: Path,
        device: str,
        parameters: Mapping[str, str],
        policy: LoadPolicy | None = None,
    ) -> None:
        self.spec = spec
        self.version = version
        self.version_dir = version_dir
        self.device = device
        self.parameters = dict(parameters)
        #: without a policy (a Slot made by a test or a tool): the folder two levels up is the root
        self.policy = policy or LoadPolicy.of(version_dir.resolve().parent.parent)
        #: the version's warmup.npz, read and checked once by select() (None: it has none)
        self.samples: Samples | None = None

    def _public(self, text: str) -> str:
        return public(text, self.policy.root)

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
            root=self.policy.root,
            samples=self.samples,
        )

    def _candidates(self) -> list[str]:
        if self.spec.engines:
            return list(self.spec.engines)
        found = backend_for_artifact(self.version_dir)
        return [found] if found else []

    def _admit(self, name: str, spec: LoadSpec) -> str | None:
        """The GPU memory budget, for engines that would place the model on a GPU."""
        return gpu.admit(spec) if runs_on_gpu(name, spec) else None

    def _allowed(self, candidates: list[str]) -> tuple[list[str], list[str]]:
        """The candidates this server allows, and a note for each it refuses."""
        allowed = [name for name in candidates if self.policy.allows(name)]
        notes = [f"{name}: {self.policy.refusal(name)}" for name in candidates if name not in allowed]
        return allowed, notes

    def select(self) -> Loaded:
        """Walk the preference list: the first engine that loads and matches the reference serves."""
        try:
            return self._select()
        except LoadFailed as exc:
            reason = self._public(str(exc))
            if reason != str(exc):
                log.info("model %s version %d: load failed: %s", self.spec.name, self.version, exc)
            raise LoadFailed(reason, [self._public(n) for n in exc.notes]) from exc

    def _select(self) -> Loaded:
        problem = confinement_problem(self.version_dir, self.policy.root)
        if problem is not None:
            raise LoadFailed(problem, [])
        candidates = self._candidates()
        if not candidates:
            artefacts = ", ".join(b.artifact for b in BACKENDS.values())
            raise LoadFailed(f"no model artefact in version {self.version} (expected one of {artefacts})", [])
        candidates, refused = self._allowed(candidates)
        if not candidates:
            raise LoadFailed("; ".join(n.split(": ", 1)[1] for n in refused), refused)
        try:
            self.samples = load_samples(
                self.version_dir, self.spec.signature, self.spec.max_batch_size, self.policy.root
            )
        except EngineError as exc:
            raise LoadFailed(str(exc), refused) from exc
        plan = self._plan()
        warmup = [(w.kind, w.batch_sizes) for w in plan]
        try:
            selection = select_engine(
                candidates,
                self.version_dir,
                self._load_spec,
                parameters=self.parameters,
                parity=parity_config(self.parameters),
                parity_batches=lambda: parity_inputs(
                    self.spec.signature, warmup, self.spec.max_batch_size, samples=self.samples
                ),
                output_names=[s.name for s in self.spec.signature.outputs],
                explicit_reference="parity_reference" in self.parameters,
                admit=self._admit,
                where=f"model {self.spec.name} version {self.version}",
                allowed=self.policy.allows,
            )
        except NoEngineServes as exc:
            reason = "; ".join([*refused, str(exc) or type(exc).__name__])
            raise LoadFailed(reason, refused + list(exc.notes)) from exc
        except EngineError as exc:
            raise LoadFailed("; ".join([*refused, str(exc) or type(exc).__name__]), refused) from exc
        notes = [self._public(n) for n in refused + list(selection.notes)]
        return Loaded(selection.engine, selection.backend, notes)

    def _plan(self) -> tuple[WarmupSpec, ...]:
        """The warm-up entries: the config's, else the sample file's rows, else one zero row.

        LoadFailed when an entry asks for the sample file and the version has none."""
        if any(w.kind == "file" for w in self.spec.warmup) and self.samples is None:
            raise LoadFailed(
                f"config.pbtxt asks for warm-up with INPUT_KIND_FILE but version {self.version} has no "
                f"{SAMPLES_FILE} (one array per input: docs/config.md#sample-inputs-warmupnpz)",
                [],
            )
        if self.spec.warmup:
            return self.spec.warmup
        if self.samples is not None:
            return (WarmupSpec(kind="file", batch_sizes=(sample_rows(self.samples),)),)
        return (WarmupSpec(),)

    def warm(self, loaded: Loaded) -> None:
        """Synthetic requests before READY, so lazy allocation and kernel selection happen before traffic.

        The config's ``warmup`` entries decide (zero, random or sample-file inputs, batch sizes,
        repetitions); without any, the version's ``warmup.npz`` runs once, or else one zero row. Every
        output is checked against the signature.
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
        plan = self._plan()
        for step, warm_spec in enumerate(plan):
            for size in warm_spec.batch_sizes if batched else (1,):
                for repeat in range(warm_spec.count):
                    if warm_spec.kind == "random":
                        inputs = random_inputs(self.spec.signature, size, seed=step * 1000 + repeat)
                    elif warm_spec.kind == "file" and self.samples is not None:
                        inputs = sample_batch(self.samples, size) if batched else dict(self.samples)
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
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the warm-up error is the one worth reporting
                loaded.engine.close()
            if isinstance(exc, Exception):
                text = str(exc) or type(exc).__name__
                if self._public(text) != text:
                    log.info("model %s version %d: warm-up failed: %s", self.spec.name, self.version, text)
                raise LoadFailed(self._public(text), loaded.notes) from exc
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
