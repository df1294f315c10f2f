"""Reference profiles and PSI (inferd/profile.py), the drift monitor's window, and `drift {}` parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferd.profile import build_profile, load_profile, psi, save_profile
from server.models.config import ConfigError, parse_config_text, spec_from_proto
from server.quality.drift import DriftMonitor, DriftSpec
from tests.support import SCALE_CONFIG


def _spec(extra: str):
    return spec_from_proto(parse_config_text(SCALE_CONFIG + extra, "config.pbtxt"), "config.pbtxt", model_name="m")


def test_a_profile_round_trips_and_bins_numeric_columns_by_quantile(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 3)).astype(np.float32)
    x[5, 1] = np.nan
    ids = rng.integers(0, 4, size=(4000,))
    profile = build_profile({"x": x, "ids": ids}, bins=10)
    save_profile(profile, tmp_path / "reference.npz")
    loaded = load_profile(tmp_path / "reference.npz")
    assert loaded == profile
    by_key = {f.key: f for f in loaded.features}
    assert set(by_key) == {("ids", -1), ("x", 0), ("x", 1), ("x", 2)}
    assert by_key[("x", 0)].kind == "numeric" and len(by_key[("x", 0)].freq) == 10
    assert all(abs(f - 0.1) < 0.01 for f in by_key[("x", 0)].freq)
    assert by_key[("x", 1)].nan_rate == pytest.approx(1 / 4000)
    assert by_key[("ids", -1)].kind == "categorical" and by_key[("ids", -1)].categories == (0, 1, 2, 3)


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    (feature,) = build_profile({"v": rng.standard_normal(5000)}).features
    same = psi(feature.freq, feature.counts(rng.standard_normal(2000)))
    shifted = psi(feature.freq, feature.counts(rng.standard_normal(2000) + 1.5))
    assert same < 0.05 < 0.2 < shifted


def test_a_file_that_is_not_a_profile_is_refused_with_a_reason(tmp_path: Path) -> None:
    np.savez(tmp_path / "reference.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an inferd profile"):
        load_profile(tmp_path / "reference.npz")


def test_the_window_keeps_about_window_rows_and_forgets_old_rows() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor("m", 1, DriftSpec(window_rows=100, sample_fraction=1.0), {"x"})
    monitor._use(build_profile({"x": rng.standard_normal((2000, 2))}), "file")
    for shift in (0.0, 3.0):
        for _ in range(10):
            monitor.observe({"x": rng.standard_normal((10, 2)) + np.array([0.0, shift])}, {}, 10)
            monitor.summarise()
        assert monitor.window_rows == 100
    assert [s.drifting for s in monitor.features] == [False, True]


def test_drift_config_defaults_and_bad_values() -> None:
    assert _spec("").drift is None
    assert _spec("drift {}").drift == DriftSpec()
    assert _spec("drift { psi_threshold: 0.3 reference_requests: 50 }").drift == DriftSpec(
        reference_requests=50, psi_threshold=0.3
    )
    with pytest.raises(ConfigError, match="sample_fraction"):
        _spec("drift { sample_fraction: 1.5 }")
    with pytest.raises(ConfigError, match="window_rows"):
        _spec("drift { window_rows: -1 }")
