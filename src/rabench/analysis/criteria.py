"""The plan's three success criteria and the break-even slowdown, judged with intervals.

Runs are paired by seed only within one batch (suite folder) and one card (gpu + host),
and within one machine where the runs record one (`machine_id`); the pairs are pooled across
batches, and a seed paired in several batches counts once (its pairs averaged). Per seed one
margin whose sign says whether the candidate met the criterion; over seeds the rule in
`stats.decide` (95% t-interval against the margin fixed in the plan, default 0, and the exact
sign-flip p; a direction only from fewer than 6 seeds).

Two designs:
  iteration design (the suite's default): the baseline and each candidate for N iterations
    (iso-iteration), each candidate also for round(N/s) iterations (iso-time), s calibrated
    on the card. Criterion 1 compares the iso-time run's final val_loss with the baseline's
    at N; criterion 2 and the break-even s* read the iso-iteration curves.
  time design (the plan's literal one): every run gets the same training time; criteria are
    read on the training-time axis and s is the runs' measured ms/iter ratio on that card.
  plateau design (`until_plateau`, the full test): every run trains to its own val_loss plateau
    (capped at N), then cools down. Criteria 1 and 2 read the pairs' measured training-time
    curves (as the time design does), criterion 3 the final val_loss of pairs that both stopped
    at a plateau.
Only finished runs with an evaluation after iteration 0 are judged; the others are listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rabench.analysis.curves import eval_curve, time_to_reach, value_at
from rabench.analysis.lengths import CURVE_UPPER_BOUND, LengthBreakEven, length_points
from rabench.analysis.pairing import N_ROLES, Pair, machine_note, pair_runs, runs_of
from rabench.analysis.runs import (
    BASE_ROLE,
    BASELINE,
    ISO_ITER,
    ISO_TIME,
    ISO_TIME_SUFFIX,
    PLATEAU,
    SIDE_ROLES,
    TIME,
    Batch,
    ConfigGroup,
    iso_time_label,
)
from rabench.experiment import CONTROL, NOREC, OPEN_TWINS
from rabench.stats import (
    EQUIVALENCE_MARGIN,
    FAIL,
    INCONCLUSIVE,
    MIN_VERDICT_PAIRS,
    NO_VERDICT,
    ONE_SEED_NOTE,
    PASS,
    TOO_FEW,
    TOO_FEW_NOTE,
    PairedStats,
    decide,
    direction,
    equivalence_text,
    finite,
    holm,
    paired_stats,
    seed_means,
)

MIN_COVERAGE = 0.5  # a criterion is read on at least this fraction of the shorter run, never at t = 0
ITER_DESIGN, TIME_DESIGN, PLATEAU_DESIGN = "iteration", "time", "plateau"
SCOPES = {TIME_DESIGN: "time-budget", PLATEAU_DESIGN: "plateau"}  # what the runs of a design are called in a scope
TITLES = {
    "1": "val_loss below the baseline's at equal training time",
    "2-literal": "time to the baseline's final val_loss below 1/s of the baseline's (plan's literal version)",
    "2-break-even": "time to the baseline's final val_loss below the baseline's own (break-even version)",
    "3": "final val_loss better than the baseline's",
}


@dataclass
class StepRatio:
    """s for one batch and card: calibrated (with interval) or measured in the runs."""

    s: float
    lo: float = math.nan
    hi: float = math.nan
    calibrated: bool = False
    floor: str | None = None

    def text(self) -> str:
        if not finite(self.s):
            return "unknown"
        out = f"{self.s:.2f}x"
        if self.calibrated:
            ci = f", CI [{self.lo:.2f}, {self.hi:.2f}]" if finite(self.lo) and finite(self.hi) else ""
            out += f" (calibrated{ci})"
        else:
            out += " (measured ms/iter ratio of the runs, not calibrated)"
        if self.floor:
            out += f"; kernel GPU-time floor: {self.floor}"
        return out


@dataclass
class Verdict:
    """One criterion for one comparison: the verdict, the numbers behind it, per seed."""

    key: str
    verdict: str
    numbers: str
    per_seed: list[str] = field(default_factory=list)
    stats: PairedStats | None = None
    scope: str = ""
    margin: float = 0.0  # the margin fixed in the plan that the verdict is judged against
    p_holm: float | None = None  # Holm-adjusted over the report's headline table (set by holm_family)

    @property
    def title(self) -> str:
        return TITLES[self.key]

    @property
    def p(self) -> float | None:
        """The exact sign-flip p against the verdict's margin, as the decision read it from the
        PairedStats; None from fewer than 2 seeds."""
        return self.stats.p_against(self.margin) if self.stats is not None else None

    def p_text(self) -> str:
        """'p = 0.031, Holm 0.28' (the raw exact p, and Holm's over the report's family)."""
        if self.p is None:
            return ""
        holm_text = f", Holm {self.p_holm:.2g}" if self.p_holm is not None else ""
        return f"p = {self.p:.2g}{holm_text}"


@dataclass
class BreakEven:
    """s*: the largest step-time ratio at which the candidate still matches the baseline's
    final val_loss at equal time, per seed and pooled."""

    values: list[float]  # s* of the seeds that reached the target
    never: list[str]  # seeds whose candidate never reached it
    bounds: list[float]  # for those seeds: s* < N_baseline / N_candidate
    lines: list[str]
    stats: PairedStats | None
    ratios: dict[str, StepRatio]  # measured s per (batch, card)
    source: str

    def median_text(self) -> str | None:
        """Median s* over every seed, a seed that never reached the target counted as below its
        bound. The interval of `stats` covers only the seeds that reached it, so with some that
        never did it leans high; the median does not. None when the order is unknown (a bound
        above a reached value)."""
        k, n = len(self.never), len(self.values) + len(self.never)
        if n == 0 or (k and self.values and max(self.bounds) > min(self.values)):
            return None
        reached = sorted(self.values)  # every never-seed sits below all of these
        middle = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
        if all(i < k for i in middle):
            return f"< {max(self.bounds):.2f}"
        if middle[0] < k:  # one censored, one reached: below the mean of the bound and that value
            return f"< {(max(self.bounds) + reached[middle[1] - k]) / 2:.2f}"
        return f"{sum(reached[i - k] for i in middle) / len(middle):.2f}"

    def headline(self, candidate: str) -> str:
        measured = "; ".join(f"{unit}: {r.text()}" for unit, r in self.ratios.items()) or "unknown"
        if not self.values and not self.never:
            return f"{candidate}: break-even slowdown not measurable (no usable pair)"
        if self.never and not self.values:
            bound = max(self.bounds)
            what = "no slowdown breaks even" if bound <= 1.0 + 1e-9 else "it never matched the baseline within its own shorter run"
            per_seed = ", ".join(f"{b:.2f}" for b in self.bounds)
            return (f"{candidate}: s* < {per_seed} (per seed; never within its run's iterations in {len(self.never)} seed(s)): "
                    f"{what}; it is {measured}")
        st = self.stats
        x = f"{st.mean:.2f}" if st.n == 1 else f"{st.mean:.2f} (95% CI [{st.lo:.2f}, {st.hi:.2f}], {st.n} seeds)"
        text = f"{candidate} would need to be <= {x} x slower to break even; it is {measured}"
        if st.n == 1:
            text += f" ({ONE_SEED_NOTE})"
        if self.never:
            text += f"; in {len(self.never)} other seed(s) it never reached the target (s* < 1)"
            median = self.median_text()
            if median is not None:
                text += (f"; median s* over all {len(self.values) + len(self.never)} seeds {median} (the interval "
                         "covers only the seeds that reached the target, so it leans high)")
        return text


@dataclass
class Comparison:
    """Candidate against baseline on all criteria, with s*."""

    candidate: str
    baseline: str
    purpose: str
    design: str
    verdicts: list[Verdict]
    breakeven: BreakEven | None
    units: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lengths: LengthBreakEven | None = None  # s* from real run lengths (lengths.length_points)

    def verdict(self, key: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.key == key), None)


# ---------------------------------------------------------------- step ratios and margins


def step_ratio(pair: Pair, batches: dict[str, Batch]) -> StepRatio:
    """The batch's calibrated s for the candidate, else the pair's measured ms/iter ratio."""
    batch = batches.get(pair.batch)
    if batch is not None:
        cal = batch.calibrated_ratio(pair.cand.attn)
        if cal is not None:
            return StepRatio(cal[0], cal[1], cal[2], True, batch.gpu_floor(pair.cand.attn))
    a, b = pair.cand.ms_per_iter, pair.base.ms_per_iter
    return StepRatio(a / b if finite(a) and finite(b) and b > 0 else math.nan)


def plan_margin(batches: dict[str, Batch], key: str) -> float:
    """The margin fixed in the plan before the runs (suite.json "margin": a number for the
    loss criteria 1 and 3, or {"1": m1, "2": m2, "3": m3}); 0 when none is stated."""
    for batch in batches.values():
        margin = batch.plan.get("margin")
        if isinstance(margin, dict):
            value = margin.get(key.split("-")[0])
            if finite(value):
                return float(value)
        elif finite(margin) and key in ("1", "3"):
            return float(margin)
    return 0.0


def equivalence_margin(batches: dict[str, Batch]) -> float:
    """The equivalence margin declared in the plan (suite.json "equivalence_margin", nats), else
    stats.EQUIVALENCE_MARGIN: per-iteration gaps are tested for equivalence within it (TOST)."""
    for batch in batches.values():
        value = batch.plan.get("equivalence_margin")
        if finite(value) and value > 0:
            return float(value)
    return EQUIVALENCE_MARGIN


def _verdict_from(key: str, margins: list[float], lines: list[str], head: str, margin: float, scope: str = "",
                  bounded: list[str] | None = None, digits: int = 4, seeds: list[int] | None = None) -> Verdict:
    """Apply the decision rule over seeds (a seed's pairs averaged); margins that are only upper
    bounds allow FAIL but never PASS."""
    if not margins:
        return Verdict(key, NO_VERDICT, f"{head}; no usable pair", lines, None, scope, margin)
    stats = paired_stats(margins, seeds)
    verdict = decide(stats, margin)
    numbers = f"{head}; mean margin {stats.text(digits)}"
    if margin:
        numbers += f"; margin fixed in the plan: {margin:+g}"
    if bounded:
        numbers += f"; in {', '.join(bounded)} the candidate never reached the target, so that margin is an upper bound"
        if verdict == PASS:
            verdict = INCONCLUSIVE
    if verdict == TOO_FEW:
        numbers += f" ({TOO_FEW_NOTE}; {direction(stats, margin)})"
    return Verdict(key, verdict, numbers, lines, stats, scope, margin)


# ---------------------------------------------------------------- criterion 1


def equal_time_final(pairs: list[Pair], batches: dict[str, Batch], base_name: str, margin: float) -> Verdict:
    """Iteration design: the iso-time run (round(N/s) iterations) against the baseline at N."""
    margins, lines = [], []
    for p in pairs:
        gap = p.base.final_val_loss - p.cand.final_val_loss
        margins.append(gap)
        line = (
            f"{p.tag}: {base_name} {p.base.final_val_loss:.4f} at {p.base.final_iter:,.0f} iterations vs candidate "
            f"{p.cand.final_val_loss:.4f} at {p.cand.final_iter:,.0f} (gap {gap:+.4f})"
        )
        used, calibrated = p.cand.step_ratio, step_ratio(p, batches)
        if used is not None and finite(calibrated.s) and abs(used / calibrated.s - 1) > 0.01:
            line += f"; sized with s = {used:.3f} but the batch's calibration now says {calibrated.s:.3f}: not quite equal time"
        lines.append(line)
    head = f"{base_name} final val_loss at N minus the candidate's at round(N/s) (iso-time runs; positive = candidate lower)"
    return _verdict_from("1", margins, lines, head, margin, "iso-time runs", seeds=[p.seed for p in pairs])


def equal_time_curves(pairs: list[Pair], base_name: str, margin: float, design: str = TIME_DESIGN) -> Verdict:
    """Time and plateau designs: both val curves at the last training time both reached."""
    margins, lines, seeds = [], [], []
    for p in pairs:
        a, b = eval_curve(p.cand, "time"), eval_curve(p.base, "time")
        t_eq = min(a[0][-1], b[0][-1])
        shorter = min(p.cand.train_time_s, p.base.train_time_s)
        if t_eq <= 0 or t_eq < MIN_COVERAGE * shorter:
            lines.append(f"{p.tag}: skipped, the curves overlap only up to {t_eq:.1f} s (< {MIN_COVERAGE:.0%} of the shorter run)")
            continue
        la, lb = float(value_at(*a, t_eq)), float(value_at(*b, t_eq))
        margins.append(lb - la)
        seeds.append(p.seed)
        lines.append(f"{p.tag}: at t = {t_eq:.1f} s {base_name} {lb:.4f} vs candidate {la:.4f} (gap {lb - la:+.4f})")
    head = f"{base_name} minus candidate val_loss at the last training time both reached (positive = candidate lower)"
    if design == PLATEAU_DESIGN:  # the shorter run's end is after its cooldown, the longer one's point is not
        head += ("; read on the measured time curves, interpolated between evaluations: the shorter run's value there "
                 "is its final loss after its cooldown, the longer run's a point of its constant-rate curve")
    return _verdict_from("1", margins, lines, head, margin, f"{SCOPES[design]} runs", seeds=seeds)


# ---------------------------------------------------------------- criterion 2


def time_to_target(pairs: list[Pair], batches: dict[str, Batch], base_name: str, design: str,
                   margins_fixed: tuple[float, float], measured: dict[int, float] | None = None) -> list[Verdict]:
    """Time for the candidate to reach the baseline's final val_loss, over the baseline's time
    to reach it: below 1/s (the plan's literal version) and below 1 (break-even).

    In the iteration design a seed with s* from run lengths (`measured`: a run scheduled for
    N / s* iterations ends at the target) takes its time ratio s / s* from there; the others read
    the N-run's curve, a schedule never run, which leans in the candidate's favour.
    Both margins fall as s grows, so a calibrated s's interval is carried into the decision:
    PASS is judged with s at its upper bound, FAIL with s at its lower bound."""
    measured = measured or {}
    from_lengths: list[int] = []  # seeds whose time ratio comes from run lengths
    rows: list[tuple[float, float, float, float]] = []  # (x_cand / x_base, s, s_lo, s_hi) per pair
    seeds: list[int] = []
    lines, bounded = [], []
    axis = "iter" if design == ITER_DESIGN else "time"
    for p in pairs:
        target = p.base.final_val_loss
        x_base = time_to_reach(*eval_curve(p.base, axis), target)
        if x_base is None or x_base <= 0:
            lines.append(f"{p.tag}: skipped, {base_name} reached its final val_loss at 0")
            continue
        r = step_ratio(p, batches)
        if not finite(r.s):
            lines.append(f"{p.tag}: skipped, step-time ratio s unknown")
            continue
        xc, yc = eval_curve(p.cand, axis)
        x_cand = time_to_reach(xc, yc, target)
        if x_cand is not None and x_cand <= 0:
            lines.append(f"{p.tag}: skipped, the candidate's first evaluation is already below the target")
            continue
        lo = r.lo if finite(r.lo) else r.s
        hi = r.hi if finite(r.hi) else r.s
        unit = "iterations" if axis == "iter" else "s"
        if design == ITER_DESIGN and p.seed in measured:
            from_lengths.append(p.seed)
            s_star = measured[p.seed]
            lines.append(f"{p.tag}: from run lengths, s* = {s_star:.3f} (a run of N / s* iterations ends at {base_name}'s final "
                         f"val_loss): time ratio s / s* = {r.s / s_star:.3f} vs 1/s = {1 / r.s:.3f} (literal) and 1 (break-even)")
            rows.append((1.0 / s_star, r.s, lo, hi))
            seeds.append(p.seed)
            continue
        if x_cand is None:
            bounded.append(p.tag)
            x_cand = float(xc[-1])  # it needs more than this
            lines.append(f"{p.tag}: target {target:.4f}: candidate never reached it within {x_cand:,.1f} {unit} (best {p.cand.best_val_loss:.4f}); s = {r.s:.2f}")
        else:
            ratio = (r.s if design == ITER_DESIGN else 1.0) * x_cand / x_base
            lines.append(f"{p.tag}: target {target:.4f}: {base_name} {x_base:,.1f} {unit}, candidate {x_cand:,.1f} {unit}; "
                         f"time ratio {ratio:.3f} vs 1/s = {1 / r.s:.3f} (literal) and 1 (break-even), s = {r.s:.2f}")
        rows.append((x_cand / x_base, r.s, lo, hi))
        seeds.append(p.seed)

    def margins(version: str, which: int) -> list[float] | None:
        """None when 1/s is unbounded: a calibration too noisy to bound s away from 0 (its
        log-scale interval underflows to 0, as a tiny model's launch-bound steps can give)."""
        out = []
        for frac, *ss in rows:
            s = ss[which]
            if version == "2-literal" and s <= 0:
                return None
            ratio = s * frac if design == ITER_DESIGN else frac  # time ratio: iterations x s, or time itself
            out.append((1.0 / s if version == "2-literal" else 1.0) - ratio)
        return out

    n_lengths = len(set(from_lengths))
    src = ("time = iterations x s; " + (f"{n_lengths} seed(s) from run lengths (s / s*), " if n_lengths else "")
           + f"{len(set(seeds)) - n_lengths} from the N-runs' curves (schedules never run: a reading that favours the candidate)"
           if design == ITER_DESIGN else f"{SCOPES[design]} runs' time curves")
    verdicts = []
    for version, fixed, head in (("2-literal", margins_fixed[0], "1/s - time ratio"), ("2-break-even", margins_fixed[1], "1 - time ratio")):
        v = _verdict_from(version, margins(version, 0), lines if version == "2-literal" else [], f"margin {head} ({src})", fixed, src, bounded, 3, seeds)
        if v.stats is not None and v.stats.n >= MIN_VERDICT_PAIRS and any(row[2] != row[3] for row in rows):
            low_s = margins(version, 1)
            pessimistic = paired_stats(margins(version, 2), seeds)
            optimistic = paired_stats(low_s, seeds) if low_s is not None else None
            if decide(pessimistic, fixed) == PASS and not bounded:
                v.verdict = PASS
            elif optimistic is not None and decide(optimistic, fixed) == FAIL:  # upper bounds on margins still support FAIL
                v.verdict = FAIL
            else:
                v.verdict = INCONCLUSIVE
            low_text = (f"[{optimistic.lo:+.3f}, {optimistic.hi:+.3f}]" if optimistic is not None
                        else "unbounded above (a calibrated lower bound of s is 0)")
            v.numbers += (f"; with s at its calibrated 95% bounds the interval is [{pessimistic.lo:+.3f}, {pessimistic.hi:+.3f}] "
                          f"(s high) to {low_text} (s low): PASS needs the first above the margin, "
                          "FAIL the second below it")
        verdicts.append(v)
    return verdicts


# ---------------------------------------------------------------- criterion 3


def final_quality(pairs: list[Pair], base_name: str, scope: str, margin: float) -> Verdict:
    """Paired final val_loss difference tested against 0 with the interval."""
    margins, lines = [], []
    for p in pairs:
        gap = p.base.final_val_loss - p.cand.final_val_loss
        margins.append(gap)
        lines.append(
            f"{p.tag}: final {base_name} {p.base.final_val_loss:.4f} vs candidate {p.cand.final_val_loss:.4f} "
            f"(gap {gap:+.4f}; stop: {(p.base.summary or {}).get('stop_reason')} / {(p.cand.summary or {}).get('stop_reason')})"
        )
    return _verdict_from("3", margins, lines, f"{base_name} minus candidate final val_loss [{scope}]", margin, scope,
                         seeds=[p.seed for p in pairs])


# ---------------------------------------------------------------- break-even slowdown


def break_even(pairs: list[Pair], batches: dict[str, Batch], design: str,
               ratio_pairs: list[Pair] | None = None) -> BreakEven:
    """s* = N / n*, n* the first (interpolated) iteration at which the candidate's val curve
    reaches the baseline's final val_loss at N: at any step-time ratio below s* the candidate
    runs more than n* iterations in the baseline's time and so matches it."""
    values, never, bounds, lines, seeds = [], [], [], [], []
    for p in pairs:
        n_base = p.base.final_iter
        xc, yc = eval_curve(p.cand, "iter")
        n_star = time_to_reach(xc, yc, p.base.final_val_loss)
        if n_star is None:
            never.append(p.tag)
            bounds.append(n_base / xc[-1])
            lines.append(f"{p.tag}: never within {xc[-1]:,.0f} iterations (best {p.cand.best_val_loss:.4f} vs target {p.base.final_val_loss:.4f}): s* < {n_base / xc[-1]:.2f}")
        elif n_star <= 0:
            lines.append(f"{p.tag}: skipped, the candidate's first evaluation is already below the target")
        else:
            values.append(n_base / n_star)
            seeds.append(p.seed)
            lines.append(f"{p.tag}: reaches {p.base.final_val_loss:.4f} at iteration {n_star:,.0f} of the baseline's {n_base:,.0f}: s* = {n_base / n_star:.3f}")
    source = {ITER_DESIGN: f"the iso-iteration runs' curves: {CURVE_UPPER_BOUND}",
              TIME_DESIGN: "time-budget runs (approximate: their schedules are keyed to time, not iterations)",
              PLATEAU_DESIGN: "plateau runs' iteration curves (approximate: the baseline's final val_loss is after its "
                              "cooldown, the candidate's curve is at the constant rate until its own plateau)"}[design]
    ratios = unit_ratios(pairs or ratio_pairs or [], batches)  # s: from the iso-time pairs when there are no others
    values = seed_means(seeds, values)[1]  # a seed paired in two batches counts once
    return BreakEven(values, never, bounds, lines, paired_stats(values) if values else None, ratios, source)


def unit_ratios(pairs: list[Pair], batches: dict[str, Batch]) -> dict[str, StepRatio]:
    """s per (batch, card): the calibration's, else the mean of the pairs' measured ratios there."""
    by_unit: dict[str, list[StepRatio]] = {}
    for p in pairs:
        by_unit.setdefault(f"{p.batch} on {p.card}" if p.batch not in (".", "") else p.card, []).append(step_ratio(p, batches))
    out = {}
    for unit, ratios in by_unit.items():
        measured = [r.s for r in ratios if finite(r.s)]
        out[unit] = ratios[0] if ratios[0].calibrated or not measured else StepRatio(sum(measured) / len(measured))
    return out


# ---------------------------------------------------------------- comparisons


def design_of(groups: dict[str, ConfigGroup]) -> str:
    """The iteration design if any run is labelled or sized by iterations, else the plateau design
    if the runs went to a plateau and none had a time budget, else the time design."""
    roles = {r.role for g in groups.values() for r in g.runs}
    if roles & {BASE_ROLE, ISO_ITER, ISO_TIME}:
        return ITER_DESIGN
    return PLATEAU_DESIGN if PLATEAU in roles and TIME not in roles else TIME_DESIGN


def equal_length_roles(design: str) -> tuple[str, ...]:
    """The roles of a design's runs that are paired run for run (same budget, or same stopping rule)."""
    return {ITER_DESIGN: N_ROLES, TIME_DESIGN: (TIME,), PLATEAU_DESIGN: (PLATEAU,)}[design]


def compare(candidate: ConfigGroup, baseline: ConfigGroup, groups: dict[str, ConfigGroup], batches: dict[str, Batch],
            purpose: str) -> Comparison:
    """Judge one candidate config against a baseline on every criterion."""
    design = design_of(groups)
    base_name = baseline.label
    notes: list[str] = []
    verdicts: list[Verdict] = []
    m = {k: plan_margin(batches, k) for k in ("1", "2-literal", "2-break-even", "3")}
    if design == ITER_DESIGN:
        n_pairs, n_notes = pair_runs(runs_of(candidate, N_ROLES), runs_of(baseline, N_ROLES))
        iso_time = groups.get(iso_time_label(candidate.label))
        t_pairs, t_notes = pair_runs(runs_of(iso_time, (ISO_TIME,)), runs_of(baseline, N_ROLES))
        notes += n_notes + [n for n in t_notes if n not in n_notes]
        if iso_time is None:
            verdicts.append(Verdict("1", NO_VERDICT, f"no iso-time runs of {candidate.label} (round(N/s) iterations) in this folder"))
        else:
            verdicts.append(equal_time_final(t_pairs, batches, base_name, m["1"]))
        lengths = length_points(candidate.label, base_name, groups)
        verdicts += time_to_target(n_pairs, batches, base_name, design, (m["2-literal"], m["2-break-even"]),
                                   lengths.s_star_by_seed() if lengths else {})
        all_pairs = n_pairs + t_pairs
    else:
        roles = equal_length_roles(design)
        n_pairs, notes = pair_runs(runs_of(candidate, roles), runs_of(baseline, roles))
        verdicts.append(equal_time_curves(n_pairs, base_name, m["1"], design))
        verdicts += time_to_target(n_pairs, batches, base_name, design, (m["2-literal"], m["2-break-even"]))
        all_pairs = n_pairs
    p_pairs, p_notes = pair_runs(runs_of(candidate, (PLATEAU,)), runs_of(baseline, (PLATEAU,)))
    p_pairs = [p for p in p_pairs if p.cand.ran_to_plateau and p.base.ran_to_plateau]
    if p_pairs:
        notes += p_notes
        verdicts.append(final_quality(p_pairs, base_name, "converged: runs stopped at a val_loss plateau", m["3"]))
    elif design == ITER_DESIGN:
        verdicts.append(final_quality(n_pairs, base_name, "proxy: final val_loss at N iterations, not at a plateau", m["3"]))
        if verdicts[-1].stats is not None:  # equal iterations: can the runs say the configs are equal?
            verdicts[-1].numbers += "; " + equivalence_text(verdicts[-1].stats, equivalence_margin(batches))
    elif design == PLATEAU_DESIGN:
        verdicts.append(final_quality(n_pairs, base_name, "proxy: final val_loss where the runs stopped, no pair "
                                      "stopped at a plateau in both runs (a cap came first)", m["3"]))
    else:
        verdicts.append(final_quality(n_pairs, base_name, "proxy: final val_loss at the time budget, not at a plateau", m["3"]))
    units = sorted({f"{p.batch} on {p.card}" for p in all_pairs})
    if len(units) > 1:
        notes.append(f"pairs pooled across {len(units)} batch/card units: {'; '.join(units)} (each pair from one batch on one card)")
    crossing = machine_note(all_pairs)
    if crossing:
        notes.append(crossing)
    repeated = sorted({p.seed for p in all_pairs if sum(q.seed == p.seed and q.cand.role == p.cand.role for q in all_pairs) > 1})
    if repeated:
        notes.append(f"seed(s) {', '.join(map(str, repeated))} paired in more than one batch: each counts once, its pairs averaged")
    if n_pairs and len({p.seed for p in n_pairs}) == 1 and len(n_pairs) == 1:
        notes.append(f"one seed: {ONE_SEED_NOTE}")
    return Comparison(candidate.label, base_name, purpose, design, verdicts,
                      break_even(n_pairs, batches, design, all_pairs), units, notes,
                      lengths if design == ITER_DESIGN else None)


@dataclass
class IterGap:
    """Paired val_loss gap (baseline - candidate) at fractions of the common iteration range."""

    fractions: list[float]
    stats: list[PairedStats | None]
    n_iters: float


def iteration_gaps(candidate: ConfigGroup, baseline: ConfigGroup, design: str, fractions=(0.5, 1.0)) -> IterGap:
    """The per-iteration comparison (the plan's questions 1 and 3) on iso-iteration runs:
    at each fraction of the common iteration range, never below MIN_COVERAGE of it."""
    roles = equal_length_roles(design)
    pairs, _ = pair_runs(runs_of(candidate, roles), runs_of(baseline, roles))
    per_fraction: list[list[tuple[int, float]]] = [[] for _ in fractions]
    ends = []
    for p in pairs:
        a, b = eval_curve(p.cand, "iter"), eval_curve(p.base, "iter")
        end = min(a[0][-1], b[0][-1])
        if end < MIN_COVERAGE * min(p.cand.iters or end, p.base.iters or end):
            continue
        ends.append(end)
        for k, f in enumerate(fractions):
            x = f * end
            gap = float(value_at(*b, x)) - float(value_at(*a, x))
            if math.isfinite(gap):
                per_fraction[k].append((p.seed, gap))
    stats = [paired_stats([g for _, g in v], [seed for seed, _ in v]) if v else None for v in per_fraction]
    return IterGap(list(fractions), stats, min(ends) if ends else math.nan)


def source_gaps(candidate: ConfigGroup, baseline: ConfigGroup, design: str) -> dict[str, PairedStats]:
    """Per source domain of the eval set: the paired final val_loss gap (baseline - candidate)
    of the runs of equal length (iso-iteration, time-budget in the time design, plateau runs in the plateau design)."""
    roles = equal_length_roles(design)
    pairs, _ = pair_runs(runs_of(candidate, roles), runs_of(baseline, roles))
    gaps: dict[str, list[tuple[int, float]]] = {}
    for p in pairs:
        cand, base = p.cand.val_by_source(), p.base.val_by_source()
        for source in sorted(set(cand) & set(base)):
            gaps.setdefault(source, []).append((p.seed, base[source] - cand[source]))
    return {source: paired_stats([g for _, g in v], [seed for seed, _ in v]) for source, v in gaps.items()}


def first_group(groups: dict[str, ConfigGroup], attn: str) -> ConfigGroup | None:
    return next((g for g in groups.values() if g.attn == attn and g.role not in SIDE_ROLES), None)


def main_groups(groups: dict[str, ConfigGroup]) -> list[ConfigGroup]:
    return [g for g in groups.values() if g.role not in SIDE_ROLES]


def candidate_groups(groups: dict[str, ConfigGroup]) -> list[ConfigGroup]:
    """Every config to judge: its main group, or, for a config with iso-time runs alone (a suite's
    isoiter_attns left it out), an empty stand-in under its label, so that compare() finds its
    iso-time runs for criterion 1 and says the other criteria have nothing to pair."""
    out = main_groups(groups)
    for label, g in groups.items():
        base = label.removesuffix(ISO_TIME_SUFFIX)
        if g.role == ISO_TIME and base not in groups:
            out.append(ConfigGroup(base, g.attn, ISO_ITER, []))
    return out


def holm_family(comparisons: list[Comparison]) -> int:
    """Holm-adjust the p of every verdict in the report's headline table (every comparison's
    criteria with a p, the family the report declares); returns the family's size."""
    family = [v for c in comparisons for v in c.verdicts if v.p is not None]
    for v, adjusted in zip(family, holm([v.p for v in family])):
        v.p_holm = adjusted
    return len(family)


def judge_all(groups: dict[str, ConfigGroup], batches: dict[str, Batch]) -> list[Comparison]:
    """Every config against sdpa (the plan's question); in the time design also RA against
    the controls std-gated and ra-norec, and ra-open against its unfused twin open."""
    sdpa = first_group(groups, BASELINE)
    out = []
    for g in candidate_groups(groups) if sdpa is not None else []:
        if g.attn == BASELINE:
            continue
        purpose = "RA against the fused baseline (the plan's question)" if g.is_ra else "control against the fused baseline"
        out.append(compare(g, sdpa, groups, batches, purpose))
    if design_of(groups) == TIME_DESIGN:
        ra = [g for g in main_groups(groups) if g.is_ra]
        for control_name, purpose in ((CONTROL, "reciprocity beyond the learned temperature"), (NOREC, "reciprocity alone (ra-norec holds w_rec at 0)")):
            control = first_group(groups, control_name)
            for g in ra:
                if control is not None and g.attn != control_name:
                    out.append(compare(g, control, groups, batches, purpose))
        for g in ra:
            twin = first_group(groups, OPEN_TWINS[g.attn]) if g.attn in OPEN_TWINS else None
            if twin is not None:
                out.append(compare(g, twin, groups, batches, "open-coded RA against open-coded standard attention"))
    return out


def control_gaps(groups: dict[str, ConfigGroup]) -> list[tuple[str, str, IterGap]]:
    """RA against its controls per iteration, and ra-norec against std-gated (they differ in the
    discoverability bias alone): (candidate, control, gaps)."""
    design = design_of(groups)
    out = []
    for control_name in (CONTROL, NOREC):
        control = first_group(groups, control_name)
        if control is None:
            continue
        for g in main_groups(groups):
            if g.is_ra and g.attn != control_name:
                out.append((g.label, control.label, iteration_gaps(g, control, design)))
    norec, gated = first_group(groups, NOREC), first_group(groups, CONTROL)
    if norec is not None and gated is not None:
        out.append((norec.label, gated.label, iteration_gaps(norec, gated, design)))
    return out


__all__ = ["PASS", "FAIL", "INCONCLUSIVE", "NO_VERDICT", "compare", "judge_all", "break_even", "pair_runs"]
