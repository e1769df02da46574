"""Small statistics for paired seeds: t-interval, exact sign-flip p, and the decision rule.

scipy is not a dependency, so the t distribution is computed here from the regularised
incomplete beta function, and its quantile by bisection on that CDF.

Decision rule (issue 12), the same for every criterion: per seed pair one margin whose
sign says whether the candidate met the criterion; over the pairs the mean margin with a
95% t-interval.
    PASS          the interval's lower bound is above the margin fixed before the runs (default 0)
    FAIL          the interval's upper bound is below that margin
    INCONCLUSIVE  the interval contains it
    NO VERDICT    fewer than 2 pairs: one seed carries no noise estimate
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PASS, FAIL, INCONCLUSIVE, NO_VERDICT = "PASS", "FAIL", "INCONCLUSIVE", "NO VERDICT"
CONFIDENCE = 0.95
EXACT_SIGN_FLIP_MAX_N = 16
ONE_SEED_NOTE = "needs >= 2 seeds; sign-flip p cannot go below 0.05 with fewer than 6 pairs"
FEW_PAIRS_NOTE = "sign-flip p cannot go below 0.05 with fewer than 6 pairs"


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            step = d * c
            result *= step
        if abs(step - 1.0) < 1e-14:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(confidence: float, df: int) -> float:
    """The t value with P(|T| <= t) = confidence (e.g. 12.706 for 95% at df = 1), by bisection."""
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > alpha:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sign_flip_p(margins: list[float], samples: int = 100_000) -> tuple[float, bool]:
    """(two-sided p, exact?): the share of sign patterns whose mean is at least as far from 0
    as the observed one. All 2^n patterns are enumerated for n <= 16, so with n pairs that
    agree in sign p = 2 / 2^n: 0.5 with 2 pairs, 2/64 with 6; random patterns above that
    (a Monte Carlo p, counting the observed pattern so that it never reads 0)."""
    values = np.asarray(margins, dtype=float)
    n = len(values)
    observed = abs(values.sum()) * (1 - 1e-12)
    if n <= EXACT_SIGN_FLIP_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # row k: the k-th sign pattern
        exact = True
    else:
        bits = np.random.default_rng(0).integers(0, 2, size=(samples, n))
        exact = False
    hits = int(np.sum(np.abs((1 - 2 * bits) @ values) >= observed))
    if exact:
        return hits / len(bits), True
    return (hits + 1) / (samples + 1), False  # the observed pattern counts too: p never reads 0


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` (at least 2) with its 95% t-interval."""
    n = len(values)
    mean = statistics.fmean(values)
    half = t_quantile(CONFIDENCE, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class PairedStats:
    """Mean paired margin with its 95% t-interval and the exact sign-flip p."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    p_sign_flip: float | None

    def text(self, digits: int = 4, unit: str = "") -> str:
        if self.n == 1:
            return f"{self.mean:+.{digits}f}{unit} (1 seed, no interval)"
        return (
            f"{self.mean:+.{digits}f}{unit}, 95% CI [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] "
            f"over {self.n} pairs, sign-flip p = {self.p_sign_flip:.3g}"
        )


def paired_stats(margins: list[float]) -> PairedStats:
    """Interval and p over per-seed margins (n = 1 gives a point with an infinite interval)."""
    n = len(margins)
    if n == 0:
        raise ValueError("paired_stats needs at least one margin")
    mean = statistics.fmean(margins)
    if n == 1:
        return PairedStats(1, mean, math.nan, -math.inf, math.inf, None)
    _, lo, hi = mean_ci95(margins)
    return PairedStats(n, mean, statistics.stdev(margins), lo, hi, sign_flip_p(margins)[0])


def decide(stats: PairedStats | None, margin: float = 0.0) -> str:
    """PASS / FAIL / INCONCLUSIVE by where the interval lies against `margin`; no verdict from one pair."""
    if stats is None or stats.n < 2:
        return NO_VERDICT
    if stats.lo > margin:
        return PASS
    if stats.hi < margin:
        return FAIL
    return INCONCLUSIVE

