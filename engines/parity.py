"""Parity: does a candidate engine answer like the reference engine on the warm-up inputs?

The fallback chain (``engines/selection.py``) serves the first engine that loads *and* agrees with a
reference within tolerances. Floats agree elementwise when ``|candidate - reference| <= atol + rtol *
|reference|`` (numpy's ``allclose`` rule; NaN only matches NaN); integers, booleans and bytes must be
equal. Shapes must be equal.

Configuration is by model parameters, so it needs no schema change:

- ``parity_reference`` (default ``auto``): ``auto`` is onnxruntime on CPU over ``model.onnx`` when
  present, else the last engine of ``engine_preference``; or an engine name; or ``none`` (parity off).
- ``parity_atol`` / ``parity_rtol``: absolute / relative tolerance (default: by precision, below).

Default tolerances follow the candidate's precision (an engine may say it has ``precision``): fp32 and
unknown-but-full precision 1e-3/1e-3; fp16, bf16, tf32 and plans of unknown precision 1e-2/1e-2; int8
and fp8 5e-2/5e-2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engines.base import EngineError, Signature, random_inputs, zero_inputs
from engines.samples import sample_batch

#: (atol, rtol) by the candidate's precision when the model's parameters do not set them.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-3),
    "tf32": (1e-2, 1e-2),
    "fp16": (1e-2, 1e-2),
    "bf16": (1e-2, 1e-2),
    "unknown": (1e-2, 1e-2),
    "int8": (5e-2, 5e-2),
    "fp8": (5e-2, 5e-2),
}
OFF = {"none", "off", "false", "0", "disabled"}


@dataclass(frozen=True, slots=True)
class ParityConfig:
    reference: str = "auto"
    atol: float | None = None
    rtol: float | None = None

    @property
    def enabled(self) -> bool:
        return self.reference.lower() not in OFF

    def tolerances(self, precision: str = "fp32") -> tuple[float, float]:
        default_atol, default_rtol = DEFAULT_TOLERANCES.get(precision.lower(), DEFAULT_TOLERANCES["fp32"])
        return (
            self.atol if self.atol is not None else default_atol,
            self.rtol if self.rtol is not None else default_rtol,
        )


def parity_config(parameters: Mapping[str, str]) -> ParityConfig:
    def tolerance(key: str) -> float | None:
        raw = parameters.get(key, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise EngineError(f"parameter '{key}' must be a number, got '{raw}'") from None
        if not value >= 0:
            raise EngineError(f"parameter '{key}' must be >= 0, got {raw}")
        return value

    return ParityConfig(
        reference=(parameters.get("parity_reference", "auto").strip() or "auto"),
        atol=tolerance("parity_atol"),
        rtol=tolerance("parity_rtol"),
    )


@dataclass(frozen=True, slots=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    mismatched: int
    total: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.mismatched == 0 and not self.detail


@dataclass(frozen=True, slots=True)
class ParityReport:
    diffs: tuple[OutputDiff, ...]
    atol: float
    rtol: float
    batches: int = 1

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs)

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.diffs), default=0.0)

    def summary(self) -> str:
        """One line: the worst output, or the largest error seen when everything agreed."""
        bad = [d for d in self.diffs if not d.ok]
        tolerance = f"atol {self.atol:g}, rtol {self.rtol:g}"
        if not bad:
            return f"max abs error {self.max_abs:.3g} over {self.batches} warm-up batch(es) ({tolerance})"
        parts = []
        for d in bad:
            if d.detail:
                parts.append(f"output '{d.name}': {d.detail}")
            else:
                rel = f", max rel error {d.max_rel:.3g}" if d.max_rel else ""
                parts.append(
                    f"output '{d.name}': max abs error {d.max_abs:.3g}{rel}, "
                    f"{d.mismatched}/{d.total} elements outside {tolerance}"
                )
        return "; ".join(parts)


def compare_output(name: str, candidate: object, reference: object, atol: float, rtol: float) -> OutputDiff:
    cand = np.asarray(candidate)
    ref = np.asarray(reference)
    if cand.shape != ref.shape:
        return OutputDiff(
            name, float("inf"), float("inf"), ref.size, ref.size, f"shape {list(cand.shape)} vs {list(ref.shape)}"
        )
    total = int(ref.size)
    if total == 0:
        return OutputDiff(name, 0.0, 0.0, 0, 0)
    if ref.dtype.kind in "fc" or cand.dtype.kind in "fc":
        c = cand.astype(np.float64)
        r = ref.astype(np.float64)
        both_nan = np.isnan(c) & np.isnan(r)
        diff = np.where(both_nan, 0.0, np.abs(c - r))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN against a number
        bound = atol + rtol * np.abs(np.where(np.isnan(r), 0.0, r))
        mismatched = int(np.count_nonzero(diff > bound))
        # relative error only where the reference is clearly non-zero (against ~0 it means nothing)
        magnitude = np.abs(np.where(np.isnan(r), 0.0, r))
        meaningful = magnitude > max(atol, np.finfo(np.float32).eps)
        rel = float((diff[meaningful] / magnitude[meaningful]).max()) if meaningful.any() else 0.0
        return OutputDiff(name, float(diff.max()), rel, mismatched, total)
    if ref.dtype.kind in "iub" and cand.dtype.kind in "iub":
        diff_int = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
        return OutputDiff(name, float(diff_int.max()), 0.0, int(np.count_nonzero(diff_int)), total)
    unequal = int(np.count_nonzero(cand.reshape(-1) != ref.reshape(-1)))
    return OutputDiff(name, float(unequal > 0), 0.0, unequal, total)


def compare_outputs(
    candidate: Mapping[str, object], reference: Mapping[str, object], names: Sequence[str], atol: float, rtol: float
) -> tuple[OutputDiff, ...]:
    diffs = []
    for name in names:
        if name not in candidate or name not in reference:
            side = "candidate" if name not in candidate else "reference"
            diffs.append(OutputDiff(name, float("inf"), float("inf"), 0, 0, f"missing from the {side}'s outputs"))
            continue
        diffs.append(compare_output(name, candidate[name], reference[name], atol, rtol))
    return tuple(diffs)


def merge_reports(reports: Sequence[tuple[OutputDiff, ...]], atol: float, rtol: float) -> ParityReport:
    """Per output, the worst of several batches."""
    merged: dict[str, OutputDiff] = {}
    for diffs in reports:
        for d in diffs:
            seen = merged.get(d.name)
            if seen is None:
                merged[d.name] = d
                continue
            merged[d.name] = OutputDiff(
                d.name,
                max(seen.max_abs, d.max_abs),
                max(seen.max_rel, d.max_rel),
                seen.mismatched + d.mismatched,
                seen.total + d.total,
                seen.detail or d.detail,
            )
    return ParityReport(tuple(merged.values()), atol, rtol, batches=len(reports))


def parity_inputs(
    signature: Signature,
    warmup: Sequence[tuple[str, Sequence[int]]],
    max_batch_size: int,
    *,
    samples: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The warm-up inputs (one per kind and batch size), plus one random batch when all are zeros.

    ``warmup`` is (kind, batch sizes) per warm-up entry as config.pbtxt declares it ("file": the
    version's ``samples``, from warmup.npz); empty means the default warm-up of one zero row. Zeros
    alone cannot tell a model from one that ignores its input, so a seeded random batch is part of the
    check, unless the version has sample inputs (a model with real pre-processing may reject random ones).
    """
    batched = max_batch_size > 0
    plan = list(warmup) or [("zero", (1,))]
    out: list[dict[str, np.ndarray]] = []
    seen: set[tuple[str, int]] = set()
    for step, (kind, sizes) in enumerate(plan):
        for size in sizes if batched else (1,):
            if (kind, size) in seen:
                continue
            seen.add((kind, size))
            if kind == "random":
                out.append(random_inputs(signature, size, seed=step * 1000))
            elif kind == "file" and samples:
                out.append(sample_batch(dict(samples), size) if batched else dict(samples))
            else:
                out.append(zero_inputs(signature, size))
    if samples is None and not any(kind == "random" for kind, _ in seen):
        out.append(random_inputs(signature, min(2, max_batch_size) if batched else 1, seed=12345))
    return out
