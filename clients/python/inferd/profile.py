"""Reference profiles of a model's tensors and the population stability index (PSI) — pure numpy.

Why here: ``inferd profile`` is an offline tool and the server's drift monitor compares live traffic with
the same summaries, so both share this module; it needs numpy only (no server import, no scipy).

A profile holds one :class:`FeatureProfile` per tracked feature: each column of a 2-D numeric tensor (the
first ``max_features``) or the whole tensor (``column = -1``) flattened otherwise. Floating features get
fixed bins cut at the reference's quantiles; integer and boolean features with few distinct values get
top-k categories (plus "other"). Each also keeps mean/std, the NaN rate and the min/max (for the live
out-of-range rate). Stored as ``reference.npz`` holding one JSON document (``profile``), so loading it
never unpickles anything.

Not covered: strings/bytes tensors (skipped), multivariate (joint) drift, KS/Jensen–Shannon statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PROFILE_FILE = "reference.npz"
FORMAT_VERSION = 1
DEFAULT_BINS = 10
DEFAULT_MAX_FEATURES = 32
#: integer features with at most this many distinct reference values are categorical
MAX_CATEGORIES = 20
#: frequency floor in PSI so an empty bin does not make it infinite
_EPS = 1e-4


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    tensor: str
    column: int  # -1: the whole tensor
    kind: str  # "numeric" | "categorical"
    edges: tuple[float, ...]  # numeric: inner bin edges (len(freq) - 1 of them)
    categories: tuple[int, ...]  # categorical: top-k values; freq has one more slot for "other"
    freq: tuple[float, ...]
    rows: int
    mean: float
    std: float
    nan_rate: float
    low: float
    high: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.tensor, self.column)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Bin counts of ``values`` (1-D) in this feature's bins; NaNs are not counted."""
        if self.kind == "categorical":
            cats = np.asarray(self.categories)
            idx = np.searchsorted(cats, values)
            idx_clipped = np.minimum(idx, len(cats) - 1)
            hit = cats[idx_clipped] == values
            out = np.bincount(np.where(hit, idx_clipped, len(cats)), minlength=len(cats) + 1)
            return out.astype(np.int64)
        finite = values[~np.isnan(values)] if values.dtype.kind == "f" else values
        idx = np.searchsorted(np.asarray(self.edges), finite, side="right")
        return np.bincount(idx, minlength=len(self.freq)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Profile:
    features: tuple[FeatureProfile, ...]
    bins: int

    @property
    def tensors(self) -> set[str]:
        return {f.tensor for f in self.features}


def feature_columns(name: str, array: np.ndarray, max_features: int) -> list[tuple[int, np.ndarray]]:
    """The tracked features of one tensor as (column, 1-D values): columns of a 2-D array, else the whole."""
    if array.dtype.kind not in "fiub":
        return []
    if array.ndim == 2:
        return [(c, array[:, c]) for c in range(min(array.shape[1], max_features))]
    return [(-1, array.reshape(-1))]


def _feature(tensor: str, column: int, values: np.ndarray, bins: int) -> FeatureProfile:
    values = values.astype(np.float64) if values.dtype.kind == "b" else values
    as_float = values.astype(np.float64, copy=False)
    nan = np.isnan(as_float)
    finite = as_float[~nan]
    n = int(values.size)
    mean = float(finite.mean()) if finite.size else 0.0
    std = float(finite.std()) if finite.size else 0.0
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    distinct = np.unique(finite)
    edges: tuple[float, ...] = ()
    cats: tuple[int, ...] = ()
    counts: np.ndarray
    if values.dtype.kind in "iub" and distinct.size <= MAX_CATEGORIES:
        cats = tuple(int(v) for v in distinct)
        counts = np.array([np.count_nonzero(finite == v) for v in distinct] + [0], dtype=np.float64)
        kind = "categorical"
    else:
        qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]) if finite.size else np.zeros(0)
        edges = tuple(float(e) for e in np.unique(qs))
        idx = np.searchsorted(np.asarray(edges), finite, side="right")
        counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
        kind = "numeric"
    total = counts.sum()
    freq = tuple(float(c / total) if total else 0.0 for c in counts)
    return FeatureProfile(
        tensor, column, kind, edges, cats, freq, n, mean, std, float(nan.mean()) if n else 0.0, low, high
    )


def build_profile(
    arrays: Mapping[str, np.ndarray], *, bins: int = DEFAULT_BINS, max_features: int = DEFAULT_MAX_FEATURES
) -> Profile:
    """Summarise sample tensors (rows first) into a profile; non-numeric tensors are skipped."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    features: list[FeatureProfile] = []
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        for column, values in feature_columns(name, array, max_features):
            if values.size == 0:
                raise ValueError(f"tensor '{name}' has no values to profile")
            features.append(_feature(name, column, values, bins))
    if not features:
        raise ValueError("no numeric tensor to profile")
    return Profile(tuple(features), bins)


def save_profile(profile: Profile, path: Path) -> None:
    doc = {"format": FORMAT_VERSION, "bins": profile.bins, "features": [asdict(f) for f in profile.features]}
    blob = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, profile=blob)


def load_profile(path: Path) -> Profile:
    """Read a profile written by :func:`save_profile`; ValueError says what is wrong with the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "profile" not in npz.files:
                raise ValueError(f"{path.name} is not an inferd profile (no 'profile' entry; see `inferd profile`)")
            doc = json.loads(npz["profile"].tobytes().decode())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name} cannot be read as a profile: {exc}") from None
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path.name}: profile format {doc.get('format')!r} is not {FORMAT_VERSION}")
    features = []
    for f in doc["features"]:
        f["edges"], f["categories"], f["freq"] = tuple(f["edges"]), tuple(f["categories"]), tuple(f["freq"])
        features.append(FeatureProfile(**f))
    return Profile(tuple(features), int(doc["bins"]))


def psi(reference: tuple[float, ...] | np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of live bin ``counts`` against reference frequencies:
    sum((q - p) * ln(q / p)), both floored at 1e-4. Under 0.1 ≈ stable, over 0.2 ≈ a real shift."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = np.maximum(np.asarray(reference, dtype=np.float64), _EPS)
    q = np.maximum(counts / total, _EPS)
    value = float(np.sum((q - p) * np.log(q / p)))
    return value if math.isfinite(value) else 0.0
