"""Scoring predictions against ground truth that arrives later (the Feedback RPC).

:class:`FeedbackBook` holds one :class:`~server.quality.predictions.PredictionStore` per model with a
``feedback {}`` policy and the unmatched counts; :class:`FeedbackScores` are one version's running sums.
Classification: accuracy (argmax == target) and log-loss; regression: per-row mean absolute and squared
error (MAE, RMSE) plus the sum of squared errors squared, for a confidence interval of the MSE.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.core.errors import InvalidArgument
from server.quality.predictions import Lookup, PredictionStore, Record

Kind = Literal["classification", "regression"]
KINDS: tuple[Kind, ...] = ("classification", "regression")
DEFAULT_MAX_RECORDS = 100_000
DEFAULT_TTL_SECONDS = 86_400
#: log-loss clips probabilities here, so one confident miss costs ~34.5, not infinity
_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class FeedbackSpec:
    """A model's feedback policy (config.pbtxt ``feedback {}``), defaults resolved."""

    output: str
    kind: Kind
    max_records: int = DEFAULT_MAX_RECORDS
    ttl_seconds: int = DEFAULT_TTL_SECONDS


class FeedbackScores:
    """One version's feedback sums (plain numbers: read by the statistics view and the metrics)."""

    __slots__ = (
        "abs_error_sum",
        "correct",
        "kind",
        "log_loss_sum",
        "scored",
        "squared_error_sq_sum",
        "squared_error_sum",
    )

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.scored = 0
        self.correct = 0
        self.log_loss_sum = 0.0
        self.abs_error_sum = 0.0
        self.squared_error_sum = 0.0
        self.squared_error_sq_sum = 0.0

    def add(self, predicted: np.ndarray, target: np.ndarray) -> None:
        """Score rows already checked by :func:`check_target`."""
        if self.kind == "classification":
            probs = _probabilities(predicted)
            rows = np.arange(len(target))
            self.correct += int(np.count_nonzero(np.argmax(probs, axis=1) == target))
            self.log_loss_sum += float(-np.log(np.clip(probs[rows, target], _EPS, 1.0)).sum())
        else:
            error = (predicted.astype(np.float64) - target.astype(np.float64)).reshape(len(target), -1)
            squared = np.mean(error * error, axis=1)
            self.abs_error_sum += float(np.mean(np.abs(error), axis=1).sum())
            self.squared_error_sum += float(squared.sum())
            self.squared_error_sq_sum += float((squared * squared).sum())
        self.scored += len(target)


def _probabilities(rows: np.ndarray) -> np.ndarray:
    """Rows as given when they are probability vectors, else their softmax (a model that returns logits)."""
    rows = rows.astype(np.float64)
    if rows.size and rows.min() >= 0.0 and rows.max() <= 1.0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return rows
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def check_target(kind: Kind, name: str, predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The target as the scorer wants it, or InvalidArgument naming the tensor and what was expected."""
    rows = predicted.shape[0]
    if kind == "classification":
        if target.dtype.kind not in "iu":
            raise InvalidArgument(f"target tensor '{name}' must be INT64 class indices, got {target.dtype}")
        if target.shape != (rows,):
            raise InvalidArgument(
                f"target tensor '{name}' must have shape [{rows}] (one class per row), got {list(target.shape)}"
            )
        classes = predicted.shape[1]
        if rows and (target.min() < 0 or target.max() >= classes):
            raise InvalidArgument(f"target tensor '{name}' holds a class outside [0, {classes})")
        return target.astype(np.int64)
    if target.dtype.kind != "f":
        raise InvalidArgument(f"target tensor '{name}' must be FP32 values, got {target.dtype}")
    if target.shape != predicted.shape:
        raise InvalidArgument(
            f"target tensor '{name}' must have the prediction's shape {list(predicted.shape)}, got {list(target.shape)}"
        )
    return target


class FeedbackBook:
    """Every model's prediction store and the feedback that matched nothing, counted per (model, reason)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: read when a model's store is made (tests replace it before the first prediction)
        self.clock = clock
        self._stores: dict[str, tuple[FeedbackSpec, PredictionStore]] = {}
        #: (model, "unknown_id" | "expired") → feedback calls; models are only ever known ones
        self.unmatched: Counter[tuple[str, str]] = Counter()

    def store(self, model: str, spec: FeedbackSpec) -> PredictionStore:
        """The model's store; a changed policy (a config reload) starts a fresh one."""
        held = self._stores.get(model)
        if held is None or (held[0] is not spec and held[0] != spec):
            held = (spec, PredictionStore(spec.max_records, spec.ttl_seconds, self.clock))
            self._stores[model] = held
        return held[1]

    def record(
        self, model: str, spec: FeedbackSpec, request_id: str, version: int, outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Remember ``version``'s scored output for ``request_id`` (the hot path: a copy, a dict insert)."""
        array = outputs.get(spec.output)
        if array is None or not request_id:
            return
        rows = np.asarray(array)
        if rows.ndim == 0 or rows.dtype.kind not in "fiub" or (spec.kind == "classification" and rows.ndim != 2):
            return
        self.store(model, spec).add(request_id, version, np.array(rows, copy=True))

    def take(self, model: str, spec: FeedbackSpec, request_id: str) -> tuple[Lookup, Record | None]:
        lookup, record = self.store(model, spec).take(request_id)
        if lookup in (Lookup.UNKNOWN, Lookup.EXPIRED):
            self.unmatched[(model, lookup.value)] += 1
        return lookup, record

    def restore(self, model: str, spec: FeedbackSpec, request_id: str, record: Record) -> None:
        self.store(model, spec).restore(request_id, record)
