"""Small statistics for paired seeds: t-interval, exact sign-flip p, and the decision rule.

scipy is not a dependency, so the t distribution is computed here from the regularised
incomplete beta function, and its quantile by bisection on that CDF.

Decision rule, the same for every criterion: per seed one margin whose sign says whether
the candidate met the criterion (a seed trained in several batches counts once, its pairs
averaged); over the seeds the mean margin with a 95% t-interval and the exact sign-flip p.
    PASS           the interval's lower bound is above the margin fixed before the runs (default 0)
                   and the exact sign-flip p (against that margin) is below 0.05
    FAIL           the interval's upper bound is below that margin, with the same p
    INCONCLUSIVE   otherwise, with enough seeds for the exact test to reach 0.05
    TOO FEW PAIRS  2-5 seeds: the sign-flip p cannot go below 2/2^5 = 0.0625, so the report gives
                   the direction only
    NO VERDICT     fewer than 2 seeds: one seed carries no noise estimate
The t-interval alone would let 3 seeds that agree in sign FAIL a config; the exact test says
3 such seeds happen by chance one time in four.

Beside the verdicts: Holm-adjusted p over a family the report declares (its headline table),
and TOST equivalence at a margin declared in the plan (two one-sided t-tests).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PASS, FAIL, INCONCLUSIVE, NO_VERDICT = "PASS", "FAIL", "INCONCLUSIVE", "NO VERDICT"
TOO_FEW = "TOO FEW PAIRS"
CONFIDENCE = 0.95
ALPHA = 0.05
MIN_VERDICT_PAIRS = 6  # the fewest pairs whose exact sign-flip p can go below ALPHA (2/2^6 = 0.031)
EQUIVALENCE_MARGIN = 0.01  # nats, when the plan declares none (suite.json "equivalence_margin")
EXACT_SIGN_FLIP_MAX_N = 16
ONE_SEED_NOTE = "needs >= 2 seeds; sign-flip p cannot go below 0.05 with fewer than 6 pairs"
FEW_PAIRS_NOTE = "sign-flip p cannot go below 0.05 with fewer than 6 pairs"
TOO_FEW_NOTE = "too few pairs for a verdict (the exact sign-flip p cannot go below 0.05 with fewer than 6)"


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


def t_one_sided_p(t: float, df: int) -> float:
    """P(T >= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * t_two_sided_p(t, df)
    return tail if t >= 0 else 1.0 - tail


def seed_means(seeds: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    """(distinct seeds, one value each): a seed that appears in several pairs (trained in two
    batches) counts once, as the mean of its pairs; pairs of one seed share its initial weights
    and data order, so counting them twice would count one draw of the noise twice."""
    by_seed: dict[int, list[float]] = {}
    for seed, value in zip(seeds, values):
        by_seed.setdefault(seed, []).append(value)
    ordered = sorted(by_seed)
    return ordered, [statistics.fmean(by_seed[s]) for s in ordered]


@dataclass
class PairedStats:
    """Mean paired margin over seeds with its 95% t-interval and the exact sign-flip p."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    p_sign_flip: float | None
    values: tuple[float, ...] = ()
    _p_by_margin: dict[float, float] = field(default_factory=dict, repr=False, compare=False)

    def text(self, digits: int = 4, unit: str = "") -> str:
        if self.n == 1:
            return f"{self.mean:+.{digits}f}{unit} (1 seed, no interval)"
        return (
            f"{self.mean:+.{digits}f}{unit}, 95% CI [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] "
            f"over {self.n} seeds, sign-flip p = {self.p_sign_flip:.3g}"
        )

    def p_against(self, margin: float) -> float | None:
        """The exact sign-flip p of the margins' differences from `margin` (0: `p_sign_flip`), computed
        once per margin: the decision rule, a Verdict's p and the Holm family all read this one value."""
        if self.n < 2:
            return None
        if margin == 0.0 or not self.values:
            return self.p_sign_flip
        if margin not in self._p_by_margin:
            self._p_by_margin[margin] = sign_flip_p([v - margin for v in self.values])[0]
        return self._p_by_margin[margin]


def paired_stats(margins: list[float], seeds: Sequence[int] | None = None) -> PairedStats:
    """Interval and p over per-seed margins (n = 1 gives a point with an infinite interval).
    With `seeds`, margins of one seed are averaged first, so n counts distinct seeds."""
    if seeds is not None:
        margins = seed_means(seeds, margins)[1]
    n = len(margins)
    if n == 0:
        raise ValueError("paired_stats needs at least one margin")
    mean = statistics.fmean(margins)
    if n == 1:
        return PairedStats(1, mean, math.nan, -math.inf, math.inf, None, tuple(margins))
    _, lo, hi = mean_ci95(margins)
    return PairedStats(n, mean, statistics.stdev(margins), lo, hi, sign_flip_p(margins)[0], tuple(margins))


def finite(value: object) -> bool:
    """A finite int or float, not a bool: what every reader of config, metrics and plan values asks
    before using one (TOML's true is no number; nan and inf are no loss, margin or rate)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def decide(stats: PairedStats | None, margin: float = 0.0) -> str:
    """PASS / FAIL when the interval excludes `margin` and the exact sign-flip p against it is
    below ALPHA; TOO FEW PAIRS below MIN_VERDICT_PAIRS seeds; no verdict from one seed."""
    if stats is None or stats.n < 2:
        return NO_VERDICT
    if stats.n < MIN_VERDICT_PAIRS:
        return TOO_FEW
    p = stats.p_against(margin)
    exact = p is not None and p < ALPHA
    if stats.lo > margin and exact:
        return PASS
    if stats.hi < margin and exact:
        return FAIL
    return INCONCLUSIVE


def direction(stats: PairedStats | None, margin: float = 0.0) -> str:
    """Which way the seeds lean against the margin, for a verdict the pairs cannot support."""
    if stats is None:
        return "no pairs"
    above = sum(v > margin for v in stats.values)
    side = "above" if stats.mean > margin else "below"
    return f"mean {side} the margin {margin:g}, {above} of {stats.n} seeds above"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest p times the
    number of hypotheses not yet rejected (m - k + 1), made monotone, capped at 1. It controls
    the chance of any false finding across the family without assuming the tests independent."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def tost_p(stats: PairedStats, margin: float) -> float:
    """Paired TOST: the larger p of the one-sided t-tests of mean <= -margin and mean >= +margin.
    Below ALPHA the mean lies within +-margin (equivalently the 90% t-interval does); nan from one seed."""
    if stats.n < 2 or not math.isfinite(stats.sd):
        return math.nan
    se = stats.sd / math.sqrt(stats.n)
    if se == 0.0:
        return 0.0 if abs(stats.mean) < margin else 1.0
    df = stats.n - 1
    p_lower = t_one_sided_p((stats.mean + margin) / se, df)  # H0: mean <= -margin
    p_upper = t_one_sided_p((margin - stats.mean) / se, df)  # H0: mean >= +margin
    return max(p_lower, p_upper)


def equivalence_text(stats: PairedStats | None, margin: float) -> str:
    """'equivalent within +-m (TOST p = ...)' or 'equivalence not shown (...)'."""
    if stats is None or stats.n < 2:
        return f"equivalence within ±{margin:g} not testable (needs >= 2 seeds)"
    p = tost_p(stats, margin)
    if p < ALPHA:
        return f"equivalent within ±{margin:g} nats (TOST p = {p:.2g})"
    return f"equivalence within ±{margin:g} nats not shown (TOST p = {p:.2g})"


RATIO_HALF_WIDTH = 0.05  # a calibrated step ratio's 95% half-width above this share of s: equal time sized from a rough s


def wide_ratio_line(attn: str, s: float, lo: float, hi: float) -> str | None:
    """A step ratio whose 95% interval is wide, with its numbers; None for a tight or unknown one.
    The suite sizes the equal-time runs from s alone, so a rough s makes 'equal time' rough too.
    The suite prints it when it calibrates; the report lists it among its cautions."""
    if not (finite(s) and finite(lo) and finite(hi)) or s <= 0:
        return None
    half = (hi - lo) / 2
    if half <= RATIO_HALF_WIDTH * s:
        return None
    return (f"{attn}'s step-time ratio s = {s:.3f} [{lo:.3f}, {hi:.3f}] is uncertain: its 95% half-width {half:.3f} is "
            f"{half / s:.0%} of s (above {RATIO_HALF_WIDTH:.0%}), so equal-time runs sized from it are only roughly equal time; "
            "calibrate with more --calib-windows")
