"""Comparison statistics against hand-computed values on fixed arrays, and CI coverage on a known distribution."""

from __future__ import annotations

import numpy as np
import pytest

from rlagents import stats


def test_iqm_hand_computed():
    assert stats.iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # trims 1 from each end: mean(2, 3)
    assert stats.iqm([0, 1, 2, 3, 4, 5, 6, 7]) == pytest.approx(3.5)  # mean(2, 3, 4, 5)
    assert stats.iqm([10, 20, 30, 40, 500]) == pytest.approx(30.0)  # the outlier is trimmed: mean(20, 30, 40)
    assert stats.iqm([7.0]) == 7.0


def test_iqm_interval_contains_point_and_is_reproducible():
    values = np.array([10.0, 20.0, 30.0, 40.0, 500.0])
    ci = stats.iqm_interval(values, reps=500)
    assert ci.point == pytest.approx(30.0)
    assert ci.low <= ci.point <= ci.high
    assert 10.0 <= ci.low and ci.high <= 500.0
    assert stats.iqm_interval(values, reps=500) == ci  # fixed bootstrap seed
    assert stats.iqm_interval(np.array([3.0])) == stats.Interval(3.0, 3.0, 3.0)


def test_probability_of_improvement_hand_computed():
    # x > y in 6 of the 9 pairs: 2>1; 4>1, 4>3; 6>1, 6>3, 6>5
    assert stats.probability_of_improvement([2, 4, 6], [1, 3, 5], reps=200).point == pytest.approx(6 / 9)
    # ties count half: 3>1, 4>1, 4=4 (0.5), 5>1, 5>4 -> 4.5 of 9
    assert stats.probability_of_improvement([3, 4, 5], [1, 4, 6], reps=200).point == pytest.approx(0.5)
    p = stats.probability_of_improvement([10, 11, 12], [0, 1, 2], reps=200)
    assert (p.point, p.low, p.high) == (1.0, 1.0, 1.0)


def test_fast_metrics_match_rliable():
    from rliable import metrics

    rng = np.random.default_rng(2)
    for n in (3, 5, 8, 10):
        x, y = rng.integers(0, 5, size=n).astype(float), rng.normal(size=n + 1)
        assert stats.iqm(y) == pytest.approx(metrics.aggregate_iqm(y.reshape(-1, 1)))
        assert stats.improvement(x, x[::-1]) == pytest.approx(
            metrics.probability_of_improvement(x.reshape(-1, 1), x[::-1].reshape(-1, 1)))
        assert stats.improvement(y, x) == pytest.approx(
            metrics.probability_of_improvement(y.reshape(-1, 1), x.reshape(-1, 1)))


def test_band_coverage_on_normal_distribution():
    """Each column is an independent experiment of 20 runs from N(0, 1), whose IQM is 0 by symmetry: the 95%
    bootstrap interval should contain 0 in about 95% of 300 experiments (percentile intervals undercover a
    little at n = 20)."""
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(20, 300))
    centre, low, high = stats.iqm_band(samples, reps=500)
    coverage = np.mean((low <= 0.0) & (0.0 <= high))
    assert 0.88 <= coverage <= 0.99, coverage
    assert np.allclose(centre, [stats.iqm(c) for c in samples.T])


def test_band_agrees_with_rliable_interval():
    values = np.random.default_rng(1).normal(size=10)
    ci = stats.iqm_interval(values, reps=2000)
    _, low, high = stats.iqm_band(values.reshape(-1, 1), reps=2000)
    width = ci.high - ci.low
    assert abs(low[0] - ci.low) < 0.15 * width and abs(high[0] - ci.high) < 0.15 * width


def test_median_with_unreached_and_grid():
    assert stats.median_with_unreached([1.0, 2.0, None]) == 2.0
    assert stats.median_with_unreached([1.0, 2.0, 3.0, None]) == 2.5
    assert stats.median_with_unreached([1.0, None, None]) is None
    assert stats.median_with_unreached([]) is None
    grid = np.array([0.0, 1.0, 1.5, 2.0, 9.0])
    out = stats.on_grid(np.array([1.0, 2.0]), np.array([10.0, 20.0]), grid)
    assert np.isnan(out[0]) and list(out[1:]) == [10.0, 10.0, 20.0, 20.0]
