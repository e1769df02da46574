"""The benchmark plan's three success criteria, judged PASS / FAIL / INCONCLUSIVE.

Each criterion compares a candidate config (e.g. ra-triton) with a baseline (sdpa),
pairing runs by seed. Per seed it computes one number whose sign says whether the
candidate met the criterion (a "margin"); across seeds the margins get a mean, a
standard deviation and a paired test. The decision rule, the same for all three:

  FAIL          mean margin <= threshold (0, or the seed-to-seed noise for criterion 3)
  PASS          mean margin > threshold, and with >= 2 seeds the paired t-test gives p < 0.05
                (with 1 seed criteria 1 and 2 take the point estimate; criterion 3 cannot)
  INCONCLUSIVE  mean margin > threshold but not significant, or the data cannot answer
                (no baseline, no evaluations, no common seeds, runs not run to a plateau)

The paired test is Student's t on the per-seed margins, with the t CDF computed here
from the regularised incomplete beta function (scipy is not a dependency); an exact
sign-flip permutation p-value is reported next to it because it assumes no distribution.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass, field

from rabench.analysis.curves import eval_curve, fraction_lower, time_to_reach, value_at
from rabench.analysis.runs import BASELINE, CONTROL, ConfigGroup, Run

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
ALPHA = 0.05
TITLES = {
    1: "val_loss below the baseline's at equal training time",
    2: "reaches the baseline's final val_loss in < 1/s of its time",
    3: "final converged val_loss better by more than seed-to-seed noise",
}


# ---------------------------------------------------------------- statistics


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        # even step
        num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        # odd step
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
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


def paired_t_test(margins: list[float]) -> tuple[float, float]:
    """(t, two-sided p) for H0: mean margin = 0. Needs >= 2 values."""
    n = len(margins)
    mean = statistics.fmean(margins)
    sd = statistics.stdev(margins)
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (sd / math.sqrt(n))
    return t, t_two_sided_p(t, n - 1)


def sign_flip_p(margins: list[float], samples: int = 20000) -> float:
    """Two-sided permutation p-value: how often flipping signs at random gives a mean at
    least as far from 0. Exact for up to 16 seeds; the smallest possible p is 2/2^n."""
    observed = abs(statistics.fmean(margins)) - 1e-12
    n = len(margins)
    if n <= 16:
        flips = itertools.product((1.0, -1.0), repeat=n)
        total = 2**n
    else:
        rng = random.Random(0)
        flips = ([rng.choice((1.0, -1.0)) for _ in range(n)] for _ in range(samples))
        total = samples
    hits = sum(abs(sum(s * m for s, m in zip(signs, margins)) / n) >= observed for signs in flips)
    return hits / total


@dataclass
class SeedStats:
    """Mean ± sd of per-seed margins and the paired tests (None with one seed)."""

    n: int
    mean: float
    std: float
    t: float | None = None
    p_t: float | None = None
    p_sign_flip: float | None = None

    def text(self, unit: str = "", digits: int = 4) -> str:
        if self.n == 1:
            return f"{self.mean:+.{digits}f}{unit} (1 seed)"
        out = f"{self.mean:+.{digits}f} ± {self.std:.{digits}f}{unit} over {self.n} seeds"
        if self.p_t is not None:
            out += f", paired t = {self.t:.2f}, p = {self.p_t:.3g} (sign-flip p = {self.p_sign_flip:.3g})"
        return out


def seed_stats(margins: list[float]) -> SeedStats:
    n = len(margins)
    mean = statistics.fmean(margins)
    if n == 1:
        return SeedStats(1, mean, math.nan)
    t, p = paired_t_test(margins)
    return SeedStats(n, mean, statistics.stdev(margins), t, p, sign_flip_p(margins))


def decide(stats: SeedStats, threshold: float = 0.0, single_seed_allowed: bool = True) -> str:
    """The shared decision rule (see the module docstring)."""
    if stats.mean <= threshold:
        return FAIL
    if stats.n == 1:
        return PASS if single_seed_allowed else INCONCLUSIVE
    return PASS if stats.p_t is not None and stats.p_t < ALPHA else INCONCLUSIVE


# ---------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    """One criterion for one comparison: the verdict, the numbers behind it, per seed."""

    criterion: int
    verdict: str
    numbers: str
    per_seed: list[str] = field(default_factory=list)
    stats: SeedStats | None = None

    @property
    def title(self) -> str:
        return TITLES[self.criterion]


@dataclass
class Comparison:
    """Candidate against baseline on all three criteria."""

    candidate: str
    baseline: str
    purpose: str
    seeds: list[int]
    slowdown: float
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "never"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def slowdown(candidate: ConfigGroup, baseline: ConfigGroup) -> float:
    """s = mean ms/iter of the candidate / mean ms/iter of the baseline, measured in this suite."""
    cand = [r.ms_per_iter for r in candidate.runs if math.isfinite(r.ms_per_iter)]
    base = [r.ms_per_iter for r in baseline.runs if math.isfinite(r.ms_per_iter)]
    if not cand or not base:
        return math.nan
    return statistics.fmean(cand) / statistics.fmean(base)


def seed_pairs(candidate: ConfigGroup, baseline: ConfigGroup) -> list[tuple[int, Run, Run]]:
    """(seed, candidate run, baseline run) for every seed both configs ran."""
    pairs = []
    for seed in sorted(set(candidate.seeds) & set(baseline.seeds)):
        pairs.append((seed, candidate.run_for_seed(seed), baseline.run_for_seed(seed)))
    return pairs


def _marks(*runs: Run) -> str:
    marked = [r.name for r in runs if r.interrupted]
    return f" [interrupted: {', '.join(marked)}]" if marked else ""


def judge_equal_time(pairs: list[tuple[int, Run, Run]], base_name: str) -> Verdict:
    """Criterion 1: at the largest time both runs reached (the budget, if both ran it), and
    along the whole common time range."""
    margins, fractions, lines = [], [], []
    for seed, cand, base in pairs:
        a, b = eval_curve(cand, "time"), eval_curve(base, "time")
        if len(a[0]) == 0 or len(b[0]) == 0:
            lines.append(f"seed {seed}: skipped, no val_loss records in {cand.name if len(a[0]) == 0 else base.name}")
            continue
        t_eq = min(a[0][-1], b[0][-1])
        la, lb = float(value_at(*a, t_eq)), float(value_at(*b, t_eq))
        if not (math.isfinite(la) and math.isfinite(lb)):
            lines.append(f"seed {seed}: skipped, the two curves do not overlap in time")
            continue
        frac = fraction_lower(a, b)
        margins.append(lb - la)
        fractions.append(frac)
        lines.append(
            f"seed {seed}: at t = {fmt_seconds(t_eq)} {base_name} {lb:.4f} vs {la:.4f} (gap {lb - la:+.4f}); "
            f"lower on {frac:.0%} of the common time range{_marks(cand, base)}"
        )
    if not margins:
        return Verdict(1, INCONCLUSIVE, "no seed pair with val_loss records on both sides", lines)
    stats = seed_stats(margins)
    verdict = decide(stats)
    numbers = (
        f"gap at equal time ({base_name} - candidate, positive = candidate lower) {stats.text()}; "
        f"candidate lower on {statistics.fmean(fractions):.0%} of the common time range"
    )
    return Verdict(1, verdict, numbers, lines, stats)


def judge_time_to_target(pairs: list[tuple[int, Run, Run]], s: float, base_name: str) -> Verdict:
    """Criterion 2: time to reach the baseline's final val_loss, as a fraction of the
    baseline's own time to reach it, against the threshold 1/s."""
    if not math.isfinite(s) or s <= 0:
        return Verdict(2, INCONCLUSIVE, "slowdown s unknown (no ms_per_iter recorded)")
    threshold = 1.0 / s
    margins, lines, never = [], [], []
    for seed, cand, base in pairs:
        target = base.final_val_loss
        if not base.evals or not cand.evals:
            lines.append(f"seed {seed}: skipped, {(base if not base.evals else cand).name} has no val_loss records")
            continue
        t_base = time_to_reach(*eval_curve(base, "time"), target)
        if t_base is None or t_base <= 0:
            lines.append(f"seed {seed}: skipped, {base.name} reached its final loss at time 0")
            continue
        t_cand = time_to_reach(*eval_curve(cand, "time"), target)
        if t_cand is None:
            never.append(seed)
            lines.append(
                f"seed {seed}: target {target:.4f} ({base_name} at {fmt_seconds(t_base)}); candidate never reached it "
                f"(best {cand.best_val_loss:.4f} in {fmt_seconds(cand.train_time_s)}){_marks(cand, base)}"
            )
            continue
        ratio = t_cand / t_base
        margins.append(threshold - ratio)
        lines.append(
            f"seed {seed}: target {target:.4f}: {base_name} {fmt_seconds(t_base)}, candidate {fmt_seconds(t_cand)}, "
            f"ratio {ratio:.3f} vs 1/s = {threshold:.3f}{_marks(cand, base)}"
        )
    head = f"s = {s:.2f} (ms/iter ratio in this suite), threshold 1/s = {threshold:.3f}"
    if never and not margins:
        return Verdict(2, FAIL, f"{head}; never reached the target in any seed ({len(never)})", lines)
    if never:
        return Verdict(
            2, INCONCLUSIVE, f"{head}; reached in {len(margins)} seeds, never reached in seeds {never}", lines
        )
    if not margins:
        return Verdict(2, INCONCLUSIVE, f"{head}; no usable seed pair", lines)
    stats = seed_stats(margins)
    mean_ratio = threshold - stats.mean
    numbers = f"{head}; time ratio {mean_ratio:.3f}; margin 1/s - ratio {stats.text()}"
    return Verdict(2, decide(stats), numbers, lines, stats)


def _pooled_seed_sd(cands: list[Run], bases: list[Run]) -> float:
    """Seed-to-seed standard deviation of the final val_loss, pooled over both configs."""
    a = [r.final_val_loss for r in cands]
    b = [r.final_val_loss for r in bases]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2.0)


def judge_final_quality(pairs: list[tuple[int, Run, Run]], base_name: str) -> Verdict:
    """Criterion 3: final val_loss gap against seed-to-seed noise; only runs trained to a
    plateau say anything about the converged loss."""
    usable = [(s, c, b) for s, c, b in pairs if math.isfinite(c.final_val_loss) and math.isfinite(b.final_val_loss)]
    if not usable:
        return Verdict(3, INCONCLUSIVE, "no seed pair with val_loss records on both sides")
    margins = [b.final_val_loss - c.final_val_loss for _, c, b in usable]
    lines = [
        f"seed {s}: final {base_name} {b.final_val_loss:.4f} vs {c.final_val_loss:.4f} "
        f"(gap {b.final_val_loss - c.final_val_loss:+.4f}; stop: {c.stop_reason} / {b.stop_reason}){_marks(c, b)}"
        for s, c, b in usable
    ]
    stats = seed_stats(margins)
    noise = _pooled_seed_sd([c for _, c, _ in usable], [b for _, _, b in usable])
    noise_text = f"{noise:.4f}" if math.isfinite(noise) else "n/a (needs 2+ seeds per config)"
    numbers = f"final gap ({base_name} - candidate) {stats.text()}; seed-to-seed sd {noise_text}"
    if not all(c.ran_to_plateau and b.ran_to_plateau for _, c, b in usable):
        numbers += "; runs stopped before a plateau: needs the full test (train --until-plateau)"
        return Verdict(3, INCONCLUSIVE, numbers, lines, stats)
    if stats.n < 2:
        numbers += "; one seed gives no noise estimate: needs more seeds"
        return Verdict(3, INCONCLUSIVE, numbers, lines, stats)
    return Verdict(3, decide(stats, threshold=noise), numbers, lines, stats)


def compare(candidate: ConfigGroup, baseline: ConfigGroup, purpose: str = "") -> Comparison:
    """Judge one candidate config against one baseline config on all three criteria."""
    pairs = seed_pairs(candidate, baseline)
    s = slowdown(candidate, baseline)
    notes = []
    unpaired = sorted(set(candidate.seeds) ^ set(baseline.seeds))
    if unpaired:
        notes.append(f"seeds {unpaired} ran for only one side and are left out of the paired comparison")
    if not pairs:
        reason = f"no seed in common (candidate {candidate.seeds}, baseline {baseline.seeds})"
        verdicts = [Verdict(k, INCONCLUSIVE, reason) for k in (1, 2, 3)]
        return Comparison(candidate.label, baseline.label, purpose, [], s, verdicts, notes)
    if len(pairs) == 1:
        notes.append("one seed: criteria 1 and 2 are point estimates with no noise estimate; a verdict needs more seeds")
    verdicts = [
        judge_equal_time(pairs, baseline.label),
        judge_time_to_target(pairs, s, baseline.label),
        judge_final_quality(pairs, baseline.label),
    ]
    return Comparison(candidate.label, baseline.label, purpose, [p[0] for p in pairs], s, verdicts, notes)


def missing_baseline(candidate: str, baseline: str, purpose: str) -> Comparison:
    reason = f"no {baseline} run in this folder: run it with the same budget and seeds"
    verdicts = [Verdict(k, INCONCLUSIVE, reason) for k in (1, 2, 3)]
    return Comparison(candidate, baseline, purpose, [], math.nan, verdicts)


def first_group(groups: dict[str, ConfigGroup], attn: str) -> ConfigGroup | None:
    return next((g for g in groups.values() if g.attn == attn), None)


def judge_all(groups: dict[str, ConfigGroup]) -> list[Comparison]:
    """Every RA-family config against sdpa; the learned-temperature control std-gated
    against sdpa and RA against std-gated; ra-open against its unfused twin open."""
    sdpa, control, open_ = first_group(groups, BASELINE), first_group(groups, CONTROL), first_group(groups, "open")
    ra_groups = [g for g in groups.values() if g.is_ra]
    out = []
    for g in ra_groups:
        purpose = "RA against the fused baseline (the plan's question)"
        out.append(compare(g, sdpa, purpose) if sdpa else missing_baseline(g.label, BASELINE, purpose))
    if control:
        purpose = "control: does a learned temperature alone beat sdpa?"
        out.append(compare(control, sdpa, purpose) if sdpa else missing_baseline(control.label, BASELINE, purpose))
        for g in ra_groups:
            out.append(compare(g, control, "reciprocity beyond the learned temperature"))
    if open_:
        for g in ra_groups:
            if g.attn == "ra-open":
                out.append(compare(g, open_, "open-coded RA against open-coded standard attention"))
    return out
