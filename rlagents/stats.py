"""Statistics of multi-seed comparisons (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").

Final returns are summarised by the interquartile mean (IQM, the mean of the middle 50% of runs) with a 95%
stratified-bootstrap confidence interval and by the probability of improvement between two agents, both
computed with `rliable`. Learning curves get a pointwise IQM and bootstrap band, vectorised with NumPy
because rliable's per-replicate Python calls are too slow for hundreds of curve points.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import trim_mean

CI_SIZE = 0.95


@dataclass
class Interval:
    """A point estimate with its confidence interval."""

    point: float
    low: float
    high: float


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the values left after trimming 25% off each end (rounded down), as
    rliable's `aggregate_iqm` (scipy's `trim_mean`), without scipy's per-call overhead inside bootstraps."""
    flat = np.sort(np.asarray(values, dtype=np.float64), axis=None)
    cut = int(0.25 * len(flat))
    return float(flat[cut:len(flat) - cut].mean())


def improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) over all pairs of runs, ties counting half: rliable's `probability_of_improvement` for one
    task (the Mann-Whitney U statistic over n·m), vectorised."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(y, dtype=np.float64).reshape(1, -1)
    return float((x > y).mean() + 0.5 * (x == y).mean())


def _rliable():
    from rliable import (  # slow import (pandas, arch): only when a report is made
        library,
        metrics,
    )

    return library, metrics


@contextlib.contextmanager
def _bootstrap_rng(seed: int):
    """rliable's stratified bootstrap draws from NumPy's global RNG (not the `random_state` it is given):
    seed that for reproducible intervals, restore it afterwards, and silence arch's RandomState notice."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(saved)


def iqm_interval(values: np.ndarray, reps: int = 2000, seed: int = 0) -> Interval:
    """IQM of final returns (one per run) with a 95% stratified-bootstrap CI (percentile method, rliable)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:  # nothing to resample
        point = iqm(values) if len(values) else math.nan
        return Interval(point, point, point)
    library, _ = _rliable()
    with _bootstrap_rng(seed) as rng:
        points, intervals = library.get_interval_estimates(
            {"x": values.reshape(-1, 1)}, lambda s: np.array([iqm(s)]), reps=reps,
            confidence_interval_size=CI_SIZE, random_state=rng)
    return Interval(float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0]))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 1000, seed: int = 0) -> Interval:
    """P(X > Y): the chance that a run of agent X ends with a higher return than a run of agent Y (ties count
    half; the Mann-Whitney U statistic over n·m), with a 95% stratified-bootstrap CI (rliable)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    library, _ = _rliable()
    point = improvement(x, y)
    if len(x) < 2 or len(y) < 2:
        return Interval(point, point, point)
    with _bootstrap_rng(seed) as rng:
        _, intervals = library.get_interval_estimates(
            {"p": [x, y]}, lambda a, b: np.array([improvement(a, b)]), reps=reps,
            confidence_interval_size=CI_SIZE, random_state=rng)
    return Interval(point, float(intervals["p"][0, 0]), float(intervals["p"][1, 0]))


def iqm_band(curves: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise IQM over runs of `curves` (runs × points) and its 95% bootstrap band (runs resampled with
    replacement, percentile method, as rliable does for one task). Returns (iqm, low, high)."""
    curves = np.asarray(curves, dtype=np.float64)
    centre = trim_mean(curves, 0.25, axis=0)
    if len(curves) < 2:
        return centre, centre, centre
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(curves), size=(reps, len(curves)))
    samples = trim_mean(curves[idx], 0.25, axis=1)  # reps × points
    alpha = (1 - CI_SIZE) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return centre, low, high


def median_with_unreached(values: list[float | None]) -> float | None:
    """Median over all runs of a "first time reached" value, where runs that never reached it count as
    infinitely late; None when that median is infinite (fewer than half of the runs reached it)."""
    if not values:
        return None
    med = float(np.median([math.inf if v is None else float(v) for v in values]))
    return None if math.isinf(med) or math.isnan(med) else med


def on_grid(xs: np.ndarray, ys: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Step function of (xs, ys) read at `grid`: the latest y at or before each grid point (NaN before xs[0])."""
    idx = np.searchsorted(np.asarray(xs), grid, side="right") - 1
    out = np.asarray(ys, dtype=np.float64)[np.clip(idx, 0, None)]
    out[idx < 0] = np.nan
    return out
