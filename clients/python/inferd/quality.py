"""Champion/challenger statistics over ``VersionStatistics.feedback`` (pure functions, no scipy).

    champion, challenger = (s.feedback for s in client.statistics("m"))
    verdict = compare(champion, challenger, champion_version=1, challenger_version=2, alpha=0.05)
    print(verdict.text)   # "v2 ahead: accuracy 0.901 vs 0.702, p=1.2e-30 (significant at alpha 0.05)"

Classification: accuracy with a Wilson interval, and a two-sided two-proportion z-test. Regression: RMSE,
with a normal-approximation interval for the MSE (from ``squared_error_sum`` and ``squared_error_sq_sum``,
its square root for the RMSE) and a Welch-style z-test on the mean squared error. Both tests treat the
versions' samples as independent; a shadow scores the same requests as its primary, which makes them
positively correlated, so the tests are conservative (they under-state significance), never optimistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

__all__ = [
    "Score",
    "Verdict",
    "compare",
    "mse_interval",
    "score",
    "two_proportion_test",
    "welch_test",
    "wilson_interval",
]

_NORMAL = NormalDist()


class FeedbackLike(Protocol):
    """What ``VersionStatistics.feedback`` (FeedbackStatistics) holds."""

    @property
    def kind(self) -> str: ...

    @property
    def scored(self) -> int: ...

    @property
    def correct(self) -> int: ...

    @property
    def squared_error_sum(self) -> float: ...

    @property
    def squared_error_sq_sum(self) -> float: ...


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _NORMAL.inv_cdf(1.0 - alpha / 2.0)


def _two_sided_p(z: float) -> float:
    return 2.0 * (1.0 - _NORMAL.cdf(abs(z)))


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a proportion: well-behaved near 0 and 1 and for small n, unlike p ± z·se.
    (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    z = _z(alpha)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_test(c1: int, n1: int, c2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of c1/n1 against c2/n2: (z, two-sided p); z > 0 when the second is
    higher. (0, 1) when either sample is empty or the pooled proportion is 0 or 1 (nothing to tell apart)."""
    if n1 <= 0 or n2 <= 0:
        return (0.0, 1.0)
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return (0.0, 1.0)
    z = (c2 / n2 - c1 / n1) / se
    return (z, _two_sided_p(z))


def _mse_moments(squared_error_sum: float, squared_error_sq_sum: float, n: int) -> tuple[float, float]:
    """(mean, unbiased sample variance) of the per-row squared error, from its sum and sum of squares."""
    mean = squared_error_sum / n
    var = (squared_error_sq_sum - n * mean * mean) / (n - 1) if n > 1 else 0.0
    return mean, max(var, 0.0)


def mse_interval(
    squared_error_sum: float, squared_error_sq_sum: float, n: int, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(MSE, low, high): the mean of the per-row squared errors with a normal-approximation interval
    (CLT on the squared errors); take square roots for the RMSE. (0, 0, inf) when n is 0."""
    if n <= 0:
        return (0.0, 0.0, math.inf)
    mean, var = _mse_moments(squared_error_sum, squared_error_sq_sum, n)
    half = _z(alpha) * math.sqrt(var / n)
    return (mean, max(0.0, mean - half), mean + half)


def welch_test(sum1: float, sq_sum1: float, n1: int, sum2: float, sq_sum2: float, n2: int) -> tuple[float, float]:
    """Welch-style z-test of the mean squared error of sample 2 against sample 1 (large n: normal, not t):
    (z, two-sided p); z > 0 when the second's MSE is higher (worse). (0, 1) when a sample has < 2 rows."""
    if n1 < 2 or n2 < 2:
        return (0.0, 1.0)
    m1, v1 = _mse_moments(sum1, sq_sum1, n1)
    m2, v2 = _mse_moments(sum2, sq_sum2, n2)
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0.0:
        return (0.0, 1.0) if m1 == m2 else (math.copysign(math.inf, m2 - m1), 0.0)
    z = (m2 - m1) / se
    return (z, _two_sided_p(z))


@dataclass(frozen=True)
class Score:
    """One version's feedback score: ``metric`` is "accuracy" (higher is better) or "rmse" (lower is better)."""

    metric: str
    scored: int
    value: float
    low: float
    high: float

    def text(self) -> str:
        if not self.scored:
            return "no feedback"
        return f"{self.metric} {self.value:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.scored} rows"


def score(feedback: FeedbackLike, alpha: float = 0.05) -> Score | None:
    """A version's score with its 1-alpha interval, or None when it has no feedback kind yet."""
    n = int(feedback.scored)
    if feedback.kind == "classification":
        low, high = wilson_interval(int(feedback.correct), n, alpha)
        return Score("accuracy", n, feedback.correct / n if n else 0.0, low, high)
    if feedback.kind == "regression":
        mse, low, high = mse_interval(feedback.squared_error_sum, feedback.squared_error_sq_sum, n, alpha)
        return Score("rmse", n, math.sqrt(mse), math.sqrt(low), math.sqrt(high))
    return None


@dataclass(frozen=True)
class Verdict:
    """Which of two versions is ahead on feedback. ``ahead`` is None when there is no significant difference
    (or nothing to compare); ``p_value`` is two-sided."""

    champion: int
    challenger: int
    metric: str
    ahead: int | None
    p_value: float
    significant: bool
    text: str


def compare(
    champion: FeedbackLike,
    challenger: FeedbackLike,
    *,
    champion_version: int,
    challenger_version: int,
    alpha: float = 0.05,
) -> Verdict:
    """The verdict for one challenger against the champion at significance level ``alpha``."""
    _z(alpha)  # validates alpha
    a, b = score(champion, alpha), score(challenger, alpha)
    pair = f"v{challenger_version} vs v{champion_version}"
    if a is None or b is None or not a.scored or not b.scored:
        return Verdict(champion_version, challenger_version, "", None, 1.0, False, f"{pair}: not enough feedback")
    if a.metric != b.metric:
        text = f"{pair}: cannot compare {b.metric} with {a.metric}"
        return Verdict(champion_version, challenger_version, "", None, 1.0, False, text)
    if a.metric == "accuracy":
        z, p = two_proportion_test(int(champion.correct), a.scored, int(challenger.correct), b.scored)
        challenger_better = z > 0
    else:
        z, p = welch_test(
            champion.squared_error_sum,
            champion.squared_error_sq_sum,
            a.scored,
            challenger.squared_error_sum,
            challenger.squared_error_sq_sum,
            b.scored,
        )
        challenger_better = z < 0
    shown = "p<1e-15" if p < 1e-15 else f"p={p:.2g}"  # 1 - cdf underflows to 0 far out in the tail
    values = f"{a.metric} {b.value:.3f} vs {a.value:.3f}, {shown}"
    if p < alpha and z != 0:
        ahead = challenger_version if challenger_better else champion_version
        text = f"{pair}: v{ahead} ahead ({values}, significant at alpha {alpha:g})"
        return Verdict(champion_version, challenger_version, a.metric, ahead, p, True, text)
    text = f"{pair}: no significant difference ({values}, alpha {alpha:g})"
    return Verdict(champion_version, challenger_version, a.metric, None, p, False, text)
