"""The report's words: numbers as it prints them, verdict and evidence words, shared sentences.

Every section says a paired number the same way (its interval, then how much it carries), so
the sentence builders live here once and the sections only choose what to say.
"""

from __future__ import annotations

import math
import statistics

from rabench.analysis.criteria import ITER_DESIGN, PLATEAU_DESIGN, IterGap, Verdict
from rabench.stats import (ALPHA, FAIL, FEW_PAIRS_NOTE, MIN_VERDICT_PAIRS, ONE_SEED_NOTE, PASS, PairedStats,
                           equivalence_text)

# the time design's caveat beside every per-iteration reading (its runs differ in schedule at equal iterations)
TIME_DESIGN_CONFOUND = (
    " (time design: each run's schedule is keyed to its own training time, so at equal iterations the runs sit at "
    "different learning rates; the iteration design removes this)"
)
# the plateau design's: equal schedules up to the shorter run's plateau, then its cooldown
PLATEAU_DESIGN_CONFOUND = (
    " (plateau design: both runs share the warm-up and the constant rate up to the shorter run's plateau; past it "
    "that run cools down, so the last common iterations compare a cooled-down run with one at its peak rate)"
)


def finite_only(values: list[float]) -> list[float]:
    """The finite numbers of `values`: a run that never logged a number must not turn a mean into NaN."""
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def mean_of(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    values = finite_only(values)
    return statistics.fmean(values) if values else math.nan


def mean_sd(values: list[float], digits: int = 4) -> str:
    """'mean ± sd (sd)' over seeds; the single value alone, since one seed has no spread."""
    values = finite_only(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (sd)"


def bold(word: str) -> str:
    return f"**{word}**"


def evidence(stats: PairedStats | None, null: float = 0.0) -> str:
    """How much a paired number carries, in words: does its interval exclude `null`?"""
    if stats is None:
        return "evidence: none (no usable pair)"
    if stats.n == 1:
        return f"evidence: thin (1 seed; {ONE_SEED_NOTE})"
    if stats.lo <= null <= stats.hi:
        return f"evidence: weak (the 95% CI includes {null:g} over {stats.n} seeds)"
    p = stats.p_against(null)
    if stats.n >= MIN_VERDICT_PAIRS and p is not None and p >= ALPHA:
        return f"evidence: mixed (the 95% CI excludes {null:g} over {stats.n} seeds, but the exact sign-flip p = {p:.2g})"
    if stats.n < MIN_VERDICT_PAIRS:
        return f"evidence: a direction (the 95% CI excludes {null:g} over {stats.n} seeds, but {FEW_PAIRS_NOTE})"
    return f"evidence: clear (the 95% CI excludes {null:g} over {stats.n} seeds)"


def gap_text(stats: PairedStats | None) -> str:
    return "no usable pair" if stats is None else stats.text()


def verdict_cell(verdict: Verdict | None, short: bool, row_seeds: int | None = None) -> str:
    """The verdict, its dagger where the runs are short, and its raw and Holm-adjusted p; its own
    number of pairs where that is not the row's `seeds` (criterion 1 needs iso-time runs, which a
    seed may lack), since the p is only read right against its own count."""
    if verdict is None:
        return ""
    word = verdict.verdict
    n = verdict.stats.n if verdict.stats is not None else None
    pairs = f"; {n} pairs" if row_seeds is not None and n is not None and n != row_seeds else ""
    p = f" ({verdict.p_text()}{pairs})" if verdict.p is not None else ""
    return bold(word) + (" †" if short and word in (PASS, FAIL) else "") + p


def iter_gap_sentence(cand: str, base: str, gaps: IterGap, eq_margin: float) -> str:
    """The per-iteration gaps at each fraction, each with its equivalence test at eq_margin."""
    parts = []
    for f, st in zip(gaps.fractions, gaps.stats):
        parts.append(f"at {f:.0%} of the common iterations ({f * gaps.n_iters:,.0f}): {base} - {cand} {gap_text(st)}"
                     + (f" ({equivalence_text(st, eq_margin)})" if st is not None else ""))
    last = gaps.stats[-1]
    return f"{cand} vs {base}: " + "; ".join(parts) + f". {evidence(last)}"


def design_text(design: str, calibrated: bool = True) -> str:
    """What the suite ran, in one line: which runs exist decides which readings the report can make.
    `calibrated`: some batch holds a step-time calibration (else s is only the runs' measured ratio)."""
    if design == ITER_DESIGN and not calibrated:
        return ("iteration design: every config for N iterations, no step-time calibration and so no iso-time runs; "
                "s, where the report reads one, is the runs' measured ms/iter ratio")
    if design == ITER_DESIGN:
        return ("iteration design: baseline and candidates for N iterations (iso-iteration), candidates also for round(N/s) "
                "iterations (iso-time) with s calibrated on the card")
    if design == PLATEAU_DESIGN:
        return ("plateau design: every run trained to its own val_loss plateau (capped at N iterations), then cooled "
                "down; criterion 1 reads the pairs' measured training-time curves at the last time both reached, "
                "criterion 3 the final val_loss of pairs that both stopped at a plateau; s is the batch's calibrated "
                "ratio where one is stored, else the runs' measured ms/iter ratio")
    return "time design: every run trained for the same training time; s is the runs' measured ms/iter ratio"


def verdict_rule(family_size: int) -> str:
    """The rule every verdict cell follows, stated above the table it governs."""
    return (
        "Rule: per criterion, the paired mean margin over seeds with a 95% t-interval and the exact sign-flip p; PASS "
        "only when the interval's lower bound is above the margin fixed in the plan (default 0) and p < 0.05, FAIL only "
        "when its upper bound is below it and p < 0.05, INCONCLUSIVE otherwise; TOO FEW PAIRS from 2-5 seeds (p cannot "
        "go below 0.05: the direction only), NO VERDICT from a single seed or where the folder holds no runs to pair (no "
        "iso-time runs of that config, say). Pairs are formed by seed within one batch and one card (and one machine "
        "where the runs record it); a seed paired in two batches counts once, its pairs averaged, in the `seeds` column "
        f"and in every interval. Each cell gives the raw p and Holm's adjusted p over the family this table declares: "
        f"{family_size} tests, every cell with a p."
    )


def method_notes() -> list[str]:
    """How every number in the report was computed, for a reader who checks rather than trusts."""
    return [
        "Only runs whose folder says finished, with an evaluation after iteration 0, are judged; partial and failed runs are listed above and never judged as if complete.",
        "Statistics: 95% t-interval of the mean paired margin (t quantile from the regularised incomplete beta function; scipy is not a dependency) "
        "and the exact two-sided sign-flip p over all 2^n sign patterns (n <= 16). With n pairs that agree in sign p = 2/2^n: 0.5 with 2, 0.0625 with 5, 0.03125 with 6. "
        "A verdict needs both: the interval beyond the margin and p < 0.05, so fewer than 6 seeds give a direction only (TOO FEW PAIRS).",
        "n counts distinct seeds: a seed paired in several batches (trained twice) counts once, its pairs' margins averaged.",
        "Holm: the verdict table is the family; each p there is also given Holm-adjusted over every cell with a p. A verdict whose "
        "Holm p is 0.05 or more does not survive correction for the other tests of the table.",
        "Equivalence: paired TOST (two one-sided t-tests) at the plan's equivalence_margin (default 0.01 nats): 'equivalent within "
        "±m' when both one-sided p are below 0.05 (the 90% t-interval lies within ±m).",
        "Machines: pairs form within one batch and card and, where runs record machine_id, one machine. Older runs record no machine "
        "identity; their proxy is the batch folder plus the GPU UUID, which names a card, so their pairs are reported as crossing "
        "machines or not shown to share one.",
        "No criterion is read at t = 0 or on a range shorter than 50% of the shorter run of a pair.",
        "Criterion 2 twice: the plan's literal version (candidate's time to the baseline's final val_loss below 1/s of the baseline's time: at s > 1 "
        "this asks for fewer than 1/s^2 of the baseline's iterations) and the break-even version (below the baseline's own time). "
        "In the iteration design the candidate's time is its iterations x s: s / s* for a seed whose s* comes from run lengths "
        "(a run scheduled for N / s* iterations ends at the target), else read from its N-run's curve (a schedule never run); "
        "a candidate that never reached the target gives an upper bound on its margin, which can support FAIL but never PASS.",
        "Margins fixed before the runs come from the suite's plan (suite.json \"margin\"): a number applies to the "
        "loss criteria 1 and 3 (criterion 2's margins are time ratios), a table keyed \"1\", \"2\", \"3\" sets each; none means 0.",
        "Curves are compared by linear interpolation between evaluations, never extrapolated.",
        "val_se is the standard error of the val estimate over val sequences (one run); the seed-to-seed spread is the sd in the tables.",
    ]
