"""The champion/challenger statistics of ``inferd.quality`` against textbook values and simulations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from inferd.quality import compare, mse_interval, score, two_proportion_test, welch_test, wilson_interval


def classification(correct: int, scored: int) -> SimpleNamespace:
    return SimpleNamespace(
        kind="classification", scored=scored, correct=correct, squared_error_sum=0.0, squared_error_sq_sum=0.0
    )


def regression(errors: np.ndarray) -> SimpleNamespace:
    sq = errors.astype(np.float64) ** 2
    return SimpleNamespace(
        kind="regression",
        scored=len(sq),
        correct=0,
        squared_error_sum=float(sq.sum()),
        squared_error_sq_sum=float((sq * sq).sum()),
    )


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-4) and high == pytest.approx(0.8922, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and 0 < high < 0.2  # never a zero-width interval at the edge
    assert wilson_interval(90, 100, alpha=0.01)[0] < wilson_interval(90, 100, alpha=0.05)[0]


def test_two_proportion_test_matches_a_hand_computation() -> None:
    z, p = two_proportion_test(70, 100, 90, 100)
    assert z == pytest.approx(0.2 / math.sqrt(0.8 * 0.2 * 0.02))
    assert p == pytest.approx(0.000407, abs=2e-6)
    assert two_proportion_test(70, 100, 70, 100) == (0.0, pytest.approx(1.0))
    assert two_proportion_test(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_test(10, 10, 10, 10) == (0.0, 1.0)  # pooled 1: nothing to tell apart


def test_mse_interval_covers_the_true_mse_and_welch_tells_better_from_worse() -> None:
    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1.0, 4000), rng.normal(0, 1.2, 4000)
    mse, low, high = mse_interval(
        *(lambda f: (f.squared_error_sum, f.squared_error_sq_sum, f.scored))(regression(good))
    )
    assert low < 1.0 < high and low < mse < high
    g, b = regression(good), regression(bad)
    z, p = welch_test(
        g.squared_error_sum, g.squared_error_sq_sum, g.scored, b.squared_error_sum, b.squared_error_sq_sum, b.scored
    )
    assert z > 0 and p < 1e-6
    assert welch_test(1.0, 1.0, 1, 1.0, 1.0, 1) == (0.0, 1.0)
    rmse = score(g)
    assert rmse is not None and rmse.metric == "rmse" and rmse.low < 1.0 < rmse.high


def test_verdict_names_the_better_version_only_when_significant() -> None:
    better = compare(classification(700, 1000), classification(900, 1000), champion_version=1, challenger_version=2)
    assert better.ahead == 2 and better.significant and "v2 ahead" in better.text
    worse = compare(classification(900, 1000), classification(700, 1000), champion_version=1, challenger_version=2)
    assert worse.ahead == 1 and worse.significant
    same = compare(classification(800, 1000), classification(805, 1000), champion_version=1, challenger_version=2)
    assert same.ahead is None and not same.significant and "no significant difference" in same.text
    # a small difference is significant at a loose level only
    loose = compare(
        classification(800, 1000), classification(830, 1000), champion_version=1, challenger_version=2, alpha=0.2
    )
    strict = compare(
        classification(800, 1000), classification(830, 1000), champion_version=1, challenger_version=2, alpha=0.01
    )
    assert loose.significant and not strict.significant


def test_regression_verdict_prefers_the_lower_rmse() -> None:
    rng = np.random.default_rng(1)
    v = compare(
        regression(rng.normal(0, 1.5, 3000)),
        regression(rng.normal(0, 1.0, 3000)),
        champion_version=1,
        challenger_version=2,
    )
    assert v.metric == "rmse" and v.ahead == 2 and v.significant


def test_verdict_without_feedback_or_with_mixed_kinds_says_so() -> None:
    empty = SimpleNamespace(kind="", scored=0, correct=0, squared_error_sum=0.0, squared_error_sq_sum=0.0)
    assert "not enough feedback" in compare(empty, classification(1, 2), champion_version=1, challenger_version=2).text
    mixed = compare(classification(1, 2), regression(np.ones(3)), champion_version=1, challenger_version=2)
    assert mixed.ahead is None and "cannot compare" in mixed.text
    with pytest.raises(ValueError, match="alpha"):
        compare(classification(1, 2), classification(1, 2), champion_version=1, challenger_version=2, alpha=1.5)


def test_the_tests_hold_their_level_on_equal_versions() -> None:
    """Simulated A/A: equal 80 % versions are called different in about alpha of the runs, not more."""
    rng = np.random.default_rng(2)
    n, runs = 2000, 400
    hits = rng.binomial(n, 0.8, size=(runs, 2))
    rejected = sum(two_proportion_test(int(a), n, int(b), n)[1] < 0.05 for a, b in hits)
    assert rejected / runs < 0.09
