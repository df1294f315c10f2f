"""Live input drift per version: sampled rows on the hot path, PSI against a reference on a background task.

Why this shape: the hot path only draws a random number and, for a sampled request, keeps references to
its input arrays (no copy; bounded by ``window_rows`` pending rows). Every ``TICK_S`` a background task
bins what was sampled into a sliding window of per-chunk counts (oldest chunks drop once the window
holds more than ``window_rows`` rows) and recomputes PSI per feature. A feature drifts while its PSI is
over the threshold; the version drifts while any feature does. Crossing into drift logs one WARNING
(again only after it recovered). Judgement starts once the window holds ``min(window_rows, 200)`` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inferd.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_FEATURES,
    PROFILE_FILE,
    FeatureProfile,
    Profile,
    build_profile,
    feature_columns,
    load_profile,
    psi,
)

log = logging.getLogger("inferd.drift")

TICK_S = 0.5
MIN_JUDGED_ROWS = 200


@dataclass(frozen=True, slots=True)
class DriftSpec:
    """config.pbtxt's ``drift {}``, defaults filled in."""

    reference_requests: int = 0
    psi_threshold: float = 0.2
    window_rows: int = 2000
    sample_fraction: float = 0.25
    max_features: int = DEFAULT_MAX_FEATURES


@dataclass(slots=True)
class FeatureState:
    profile: FeatureProfile
    threshold: float
    chunks: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    rows: int = 0
    psi: float = 0.0
    drifting: bool = False


class DriftError(Exception):
    """A reference that cannot be used for this version (the load fails with this reason)."""


class DriftMonitor:
    """One version's drift state; ``observe`` on the hot path, ``run`` as its background task."""

    def __init__(self, model: str, version: int, spec: DriftSpec, tensor_names: set[str]) -> None:
        self.model, self.version, self.spec = model, version, spec
        self.tensor_names = tensor_names
        self.reference = ""  # "file" | "first_requests" | "" while collecting
        self.features: list[FeatureState] = []
        self.drifting = False
        self.window_rows = 0
        self.pending: list[Mapping[str, np.ndarray]] = []
        self.pending_rows = 0
        self.dropped_rows = 0
        self._collected: list[Mapping[str, np.ndarray]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.ticks = 0

    @classmethod
    def for_version(
        cls, model: str, version: int, spec: DriftSpec, version_dir: Path, inputs: set[str], outputs: set[str]
    ) -> DriftMonitor:
        """The monitor of a version; with reference_requests == 0 its folder's reference.npz must fit the model."""
        monitor = cls(model, version, spec, inputs)
        if spec.reference_requests:
            return monitor
        path = version_dir / PROFILE_FILE
        if not path.is_file():
            raise DriftError(
                f"drift {{}} needs {PROFILE_FILE} in the version folder (write it with `inferd profile`) "
                "or drift { reference_requests: N } to take the first N requests as the reference"
            )
        try:
            profile = load_profile(path)
        except ValueError as exc:
            raise DriftError(f"drift reference: {exc}") from None
        unknown = sorted(profile.tensors - inputs - outputs)
        if unknown:
            raise DriftError(
                f"drift reference {PROFILE_FILE} names tensor(s) {', '.join(unknown)} that the model does not have "
                f"(inputs: {', '.join(sorted(inputs))}; outputs: {', '.join(sorted(outputs))})"
            )
        monitor.tensor_names = profile.tensors
        monitor._use(profile, "file")
        return monitor

    def _use(self, profile: Profile, reference: str) -> None:
        self.features = [FeatureState(f, self.spec.psi_threshold) for f in profile.features]
        self.reference = reference

    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], rows: int) -> None:
        """Hot path: keep references to a sampled request's tensors (no copy); bounded by window_rows."""
        if not self.reference:
            self._collect(inputs)
            return
        if random.random() >= self.spec.sample_fraction:
            return
        if self.pending_rows + rows > self.spec.window_rows:
            self.dropped_rows += rows
            return
        self.pending.append({**inputs, **outputs} if self.tensor_names - inputs.keys() else inputs)
        self.pending_rows += rows

    def _collect(self, inputs: Mapping[str, np.ndarray]) -> None:
        """First-requests mode: every request's inputs until N are kept; the task builds the reference."""
        if len(self._collected) < self.spec.reference_requests:
            self._collected.append({k: v for k, v in inputs.items() if k in self.tensor_names})
            if len(self._collected) == self.spec.reference_requests:
                self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"drift {self.model} v{self.version}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                self.summarise()
            except Exception:  # a bad sample must not end monitoring
                log.exception("model %s version %d: drift summary failed", self.model, self.version)

    def summarise(self) -> None:
        """Bin the pending rows into the window and recompute PSI (background task; also callable directly)."""
        self.ticks += 1
        if not self.reference:
            if len(self._collected) >= self.spec.reference_requests:
                arrays = {
                    name: np.concatenate([np.asarray(t[name]) for t in self._collected if name in t])
                    for name in self.tensor_names
                }
                self._collected = []
                try:
                    profile = build_profile(arrays, bins=DEFAULT_BINS, max_features=self.spec.max_features)
                except ValueError as exc:
                    log.warning("model %s version %d: no drift reference: %s", self.model, self.version, exc)
                    return
                self._use(profile, "first_requests")
            return
        pending, self.pending, self.pending_rows = self.pending, [], 0
        by_tensor: dict[str, list[tuple[int, np.ndarray]]] = {}
        for name in {f.profile.tensor for f in self.features}:
            parts = [np.asarray(t[name]) for t in pending if name in t]
            if parts:
                array = np.concatenate(parts)
                by_tensor[name] = feature_columns(name, array, self.spec.max_features)
        for state in self.features:
            columns = dict(by_tensor.get(state.profile.tensor, ()))
            values = columns.get(state.profile.column)
            if values is not None and values.size:
                state.chunks.append((int(values.size), state.profile.counts(values)))
                state.rows += int(values.size)
                while state.chunks and state.rows - state.chunks[0][0] >= self.spec.window_rows:
                    state.rows -= state.chunks.popleft()[0]
            self._judge(state)
        self.window_rows = max((s.rows for s in self.features), default=0)
        was = self.drifting
        self.drifting = any(s.drifting for s in self.features)
        if self.drifting and not was:
            worst = max(self.features, key=lambda s: s.psi)
            log.warning(
                "model %s version %d: input drift: %s PSI %.3f > %.3f (%d feature(s) drifting, window %d rows)",
                self.model,
                self.version,
                _feature_name(worst.profile),
                worst.psi,
                worst.threshold,
                sum(s.drifting for s in self.features),
                self.window_rows,
            )
        elif was and not self.drifting:
            log.info("model %s version %d: input drift cleared", self.model, self.version)

    def _judge(self, state: FeatureState) -> None:
        if not state.chunks:
            return
        counts = np.sum([c for _, c in state.chunks], axis=0)
        state.psi = psi(state.profile.freq, counts)
        state.drifting = state.rows >= min(self.spec.window_rows, MIN_JUDGED_ROWS) and state.psi > state.threshold


def _feature_name(f: FeatureProfile) -> str:
    return f.tensor if f.column < 0 else f"{f.tensor}[{f.column}]"
