"""val_loss curves on a common axis: interpolation, seed bands, time to a target.

Evaluations happen every `eval_every` iterations, which for configs of different
speed falls at different times; comparing them at equal wall-clock time needs
linear interpolation between evaluations. Nothing is extrapolated: outside a run's
first and last evaluation its curve is undefined (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rabench.analysis.runs import Run

AXES = {"time": "train_time_s", "iter": "iter", "tokens": "tokens"}
AXIS_TITLES = {
    "time": "training time (s, excluding eval and compilation)",
    "iter": "iteration",
    "tokens": "tokens",
}
GRID_POINTS = 200
REACH_TOLERANCE = 1e-9  # relative: float noise in a loss equal to the target still reaches it


def eval_curve(run: Run, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, val_loss) at the run's evaluations, x increasing, repeated x dropped.
    Cached on the run: every criterion and plot asks for the same curves."""
    if ("curve", axis) not in run.cache:
        run.cache[("curve", axis)] = _build_eval_curve(run, axis)
    return run.cache[("curve", axis)]


def _build_eval_curve(run: Run, axis: str) -> tuple[np.ndarray, np.ndarray]:
    key = AXES[axis]
    points = [(float(m[key]), float(m["val_loss"])) for m in run.evals if m.get(key) is not None]
    xs, ys = [], []
    for x, y in sorted(points, key=lambda p: p[0]):
        if xs and x <= xs[-1]:
            continue
        xs.append(x)
        ys.append(y)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def value_at(x: np.ndarray, y: np.ndarray, xq: np.ndarray | float) -> np.ndarray:
    """Linear interpolation of the curve at xq; NaN outside [x[0], x[-1]]."""
    xq = np.asarray(xq, dtype=float)
    if len(x) == 0:
        return np.full(xq.shape, np.nan)
    out = np.interp(xq, x, y)
    return np.where((xq < x[0]) | (xq > x[-1]), np.nan, out)


def common_range(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float] | None:
    """The x range every curve covers, or None if they do not overlap."""
    if not curves or any(len(x) == 0 for x, _ in curves):
        return None
    lo = max(float(x[0]) for x, _ in curves)
    hi = min(float(x[-1]) for x, _ in curves)
    return (lo, hi) if hi >= lo else None


def grid(lo: float, hi: float, n: int = GRID_POINTS) -> np.ndarray:
    return np.linspace(lo, hi, n) if hi > lo else np.asarray([lo])


@dataclass
class Band:
    """Mean and min/max of val_loss over seeds on a shared grid."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    std: np.ndarray
    n_seeds: int


def seed_band(runs: list[Run], axis: str) -> Band | None:
    """Mean and min-max band over the seeds, on the range all seeds cover.

    With one seed the curve is the run's own evaluations (no interpolation needed).
    """
    curves = [eval_curve(r, axis) for r in runs]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    if len(curves) == 1:
        x, y = curves[0]
        return Band(x, y, y, y, np.zeros_like(y), 1)
    span = common_range(curves)
    if span is None:
        return None
    xs = grid(*span)
    values = np.vstack([value_at(x, y, xs) for x, y in curves])
    std = values.std(axis=0, ddof=1)
    return Band(xs, values.mean(axis=0), values.min(axis=0), values.max(axis=0), std, len(curves))


def time_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """First x at which the curve reaches val_loss <= target, interpolating linearly
    between the two evaluations that straddle it; None if it never does.

    If the first evaluation is already at or below the target, its x is returned
    (an upper bound: the crossing happened before anything was measured).
    """
    if len(x) == 0 or not math.isfinite(target):
        return None
    target += REACH_TOLERANCE * abs(target)  # a curve equal to the target up to rounding reaches it
    if y[0] <= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] <= target:
            x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
            return float(x0 + (y0 - target) / (y0 - y1) * (x1 - x0)) if y0 != y1 else float(x1)
    return None
