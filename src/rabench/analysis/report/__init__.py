"""`rabench report DIR`: report.md and a self-contained report.html for a suite or campaign.

The report says only what the runs carry: verdicts come from paired intervals
(criteria.py, stats.py); where the evidence is thin (one seed, gates barely moved, runs
still improving at their end) it says so beside the numbers instead of a stronger word.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from rabench.analysis import plots
from rabench.analysis.cost_floor import cost_floor_section
from rabench.analysis.criteria import (
    ITER_DESIGN,
    Comparison,
    IterGap,
    Verdict,
    candidate_groups,
    control_gaps,
    design_of,
    equivalence_margin,
    first_group,
    holm_family,
    iteration_gaps,
    judge_all,
    main_groups,
    source_gaps,
)
from rabench.analysis.curves import eval_curve, value_at
from rabench.analysis.document import Doc
from rabench.analysis.lengths import CURVE_UPPER_BOUND, lengths_section
from rabench.analysis.lrsweep import LR_SWEEP_PLOT, lr_sweep_section
from rabench.analysis.plateau import plateau_section
from rabench.analysis.regime import regime_text
from rabench.analysis.runs import (BASELINE, LADDER, LR_SWEEP, TIME, Batch, ConfigGroup, Run, group_by_config, is_variant,
                                   iso_time_label, load_batches, split_by_horizon, split_suite_batches)
from rabench.stats import (ALPHA, FAIL, FEW_PAIRS_NOTE, MIN_VERDICT_PAIRS, ONE_SEED_NOTE, PASS, PairedStats,
                           equivalence_text)

GATES_BARELY_MOVED = 0.05  # max |w - w_init| below this: RA has not yet learned what to do with its gates
STILL_FALLING = 0.02  # val_loss drop over the last quarter of a run above this: far from convergence
MIN_EVALS = 4  # fewer evaluations after iteration 0 than this: a curve is a few straight segments
VAL_RISE = 0.05  # val_loss this far above the run's best earlier evaluation: training became unstable
TRAIN_SPIKE = 1.0  # a logged train_loss this far above the median of the SPIKE_WINDOW records before it: a spike
SPIKE_WINDOW = 50

# the report's plot files: build_report draws them, remove_single_length_plots clears stale ones
LOSS_PLOT = "val_loss_vs_{}.png"  # an axis: time, iter, tokens
MS_PLOT = "ms_per_iter.png"
GATES_PLOT = "gates_{}.png"  # a config label, made safe for a file name
W_REC_PLOT = "final_w_rec_by_layer.png"
LENGTHS_PLOT = "break_even_lengths.png"
STABILITY_PLOT = "stability_{}.png"  # <batch>_<run> of a run that became unstable
REPORT_PLOT_PATTERNS = (*(LOSS_PLOT.format(axis) for axis in ("time", "iter", "tokens")), MS_PLOT,
                        GATES_PLOT.format("*"), W_REC_PLOT, STABILITY_PLOT.format("*"), LENGTHS_PLOT, LR_SWEEP_PLOT)


# ---------------------------------------------------------------- small helpers


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _mean(values: list[float]) -> float:
    values = _finite(values)
    return statistics.fmean(values) if values else math.nan


def _mean_sd(values: list[float], digits: int = 4) -> str:
    values = _finite(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (sd)"


def _bold(word: str) -> str:
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


def last_quarter_drop(run: Run) -> float:
    """How much val_loss fell over the last quarter of the run's iterations."""
    x, y = eval_curve(run, "iter")
    if len(x) < 3:
        return math.nan
    return float(value_at(x, y, 0.75 * x[-1])) - float(y[-1])


# ---------------------------------------------------------------- header


def header_lines(batches: list[Batch], runs: list[Run], design: str) -> list[str]:
    cards = sorted({r.card for r in runs})
    budgets = set()
    for r in runs:
        c = r.config
        if c.get("time_budget_s"):
            budgets.add(f"{float(c['time_budget_s']):.0f} s of training time")
        if c.get("max_iters"):
            budgets.add(f"{c['max_iters']} iterations ({r.role})")
        if c.get("until_plateau"):
            budgets.add("until val_loss plateaus")
    design_text = (
        "iteration design: baseline and candidates for N iterations (iso-iteration), candidates also for round(N/s) "
        "iterations (iso-time) with s calibrated on the card" if design == ITER_DESIGN
        else "time design: every run trained for the same training time; s is the runs' measured ms/iter ratio"
    )
    lines = [
        regime_text(runs),
        f"design: {design_text}",
        f"batches (suite folders): {len(batches)}: " + ", ".join(f"`{b.name}` ({len(b.runs)} runs)" for b in batches),
        f"cards (gpu @ host): {'; '.join(cards)}"
        + ("  (runs are paired only within one batch and one card; step-time ratios are never mixed across cards)" if len(cards) > 1 or len(batches) > 1 else ""),
        f"budgets: {'; '.join(sorted(budgets)) or 'none recorded'}",
        f"seeds: {', '.join(map(str, sorted({r.seed for r in runs})))}",
        "time axis: training time (`train_time_s`), device-synchronised, excluding evaluation and compilation",
    ]
    machines = sorted({r.machine_id for r in runs if r.machine_id})
    unknown = sum(r.machine_id is None for r in runs)
    lines.append(f"machines (machine_id: GPU UUIDs + boot id): {len(machines)} recorded"
                 + (f"; {unknown} run(s) record none (older folders: pairs cannot be shown to share a machine)" if unknown else ""))
    if any(b.source_hashes for b in batches):
        lines.append("code (hash of rabench's Python sources): " + "; ".join(
            f"`{b.name}` {', '.join(b.source_hashes) or 'not recorded'}" for b in batches))
    return lines


def mixed_code_notes(batches: list[Batch]) -> list[str]:
    """Batches whose runs (or calibration) came from more than one version of the code: an
    iso-time budget sized with one version and trained with another is not exactly equal time."""
    return [f"`{b.name}` was made by {len(b.source_hashes)} versions of the code ({', '.join(b.source_hashes)}): "
            "its pairs and its iso-time budgets may mix them" for b in batches if len(b.source_hashes) > 1]


def calibration_notes(batches: list[Batch]) -> list[str]:
    """Batches whose iso-time runs were sized with step ratios measured elsewhere: a calibration the
    suite kept under --reuse-calibration (suite.json "calibration_reuse"), or one whose recorded
    machine differs from its runs'. Equal time holds only where s was measured on the runs' machine."""
    out = []
    for b in batches:
        for entry in b.plan.get("calibration_reuse") or []:
            if isinstance(entry, dict):
                out.append(f"`{b.name}`: its calibration (measured {entry.get('calibration_measured_at') or 'at a time not recorded'}) "
                           f"was kept with `{entry.get('flag', '--reuse-calibration')}` on {entry.get('at') or 'a date not recorded'} "
                           f"across {'; '.join(map(str, entry.get('differences') or [])) or 'differences not recorded'}: "
                           "its iso-time runs were sized with step ratios measured elsewhere")
        measured_on = b.calibration.get("machine_id")
        trained_on = sorted({r.machine_id for r in b.runs if r.machine_id})
        if measured_on and trained_on and any(m != measured_on for m in trained_on):
            out.append(f"`{b.name}`: calibration measured on machine {measured_on}, runs trained on {', '.join(trained_on)}")
    return out


def unjudged_lines(runs: list[Run]) -> list[str]:
    out = []
    for r in runs:
        if not r.finished:
            last = int(r.last_record.get("iter", 0) or 0)
            out.append(f"`{r.where}`: **{r.status_word}** (state {r.state}, last logged iteration {last}): listed, never judged")
        elif not r.trained_evals:
            out.append(f"`{r.where}`: finished but has no evaluation after iteration 0: never judged")
    return out


STABILITY_RULE = (f"val_loss more than {VAL_RISE} above its best earlier evaluation, or a logged train_loss more than "
                  f"{TRAIN_SPIKE} nat above the median of the {SPIKE_WINDOW} records before it")


def unstable(run: Run) -> bool:
    """Did val_loss rise past VAL_RISE above its best, or train_loss jump by TRAIN_SPIKE?"""
    return run.val_rise()[0] > VAL_RISE or run.train_loss_spike(SPIKE_WINDOW)[0] > TRAIN_SPIKE


def stability_lines(flagged: list[Run]) -> list[str]:
    """One line per run that became unstable, with where and by how much."""
    out = []
    for r in flagged:
        (rise, at), (jump, spike_at) = r.val_rise(), r.train_loss_spike(SPIKE_WINDOW)
        best = min(r.evals, key=lambda m: float(m["val_loss"]))
        parts = [f"best val_loss {float(best['val_loss']):.4f} at iteration {int(best['iter']):,}, final {r.final_val_loss:.4f}",
                 f"val_loss rose {rise:.3f} above its best by iteration {at:,.0f}" if rise > 0 else "val_loss never rose",
                 f"largest train_loss jump {jump:.2f} nats above the median of the {SPIKE_WINDOW} records before it "
                 f"(iteration {spike_at:,.0f})" if jump > 0 else "no train_loss jump"]
        out.append(f"`{r.where}`: " + "; ".join(parts))
    return out


def unstable_names(groups: dict[str, ConfigGroup]) -> list[str]:
    return sorted(r.where for g in groups.values() for r in g.judged if unstable(r))


def stability_section(doc: Doc, runs: list[Run], out_dir: Path) -> None:
    doc.heading(2, "Training stability")
    flagged = [r for r in runs if unstable(r)]
    if not flagged:
        doc.para(f"No judged run became unstable ({STABILITY_RULE}).")
        return
    doc.para(f"{len(flagged)} judged run(s) became unstable ({STABILITY_RULE}). They stay in their pairs and in the verdicts: dropping a run because it became unstable would favour the "
             "config that did. Their final val_loss is not the config's typical quality.")
    doc.bullets(stability_lines(flagged))
    for r in flagged:
        partners = [p for p in runs if p is not r and p.batch == r.batch and p.seed == r.seed]
        name = STABILITY_PLOT.format(r.where.replace("/", "_"))
        doc.image(plots.plot_stability(r, partners, out_dir / name), f"{r.where} beside the runs of its seed in its batch")


# ---------------------------------------------------------------- tables


def config_table(groups: dict[str, ConfigGroup]) -> tuple[list[str], list[list[str]]]:
    """One row per config and role: what ran, how fast, how good (with the val standard error)."""
    headers = ["config", "role", "card", "runs (finished)", "seeds", "iterations", "ms/iter", "final val_loss (seed mean ± sd)", "val_se (mean)"]
    rows = []
    cards = sorted({r.card for g in groups.values() for r in g.runs})
    for (label, g), card in ((item, card) for card in cards for item in groups.items()):
        runs = [r for r in g.runs if r.card == card]
        if not runs:
            continue
        g = ConfigGroup(label, g.attn, g.role, runs)  # this card's runs only: ms/iter never mixed across cards
        judged = g.judged
        rows.append([
            label,
            g.role,
            card,
            f"{len(g.runs)} ({sum(r.finished for r in g.runs)})",
            ",".join(map(str, g.seeds)),
            f"{_mean([r.iters for r in judged]):,.0f}" if judged else "n/a",
            _mean_sd([r.ms_per_iter for r in judged], 2),
            _mean_sd([r.final_val_loss for r in judged]),
            f"{_mean([r.final_val_se for r in judged]):.4f}" if _finite([r.final_val_se for r in judged]) else "not recorded",
        ])
    return headers, rows


def source_table(groups: dict[str, ConfigGroup]) -> tuple[list[str], list[list[str]]] | None:
    """Final val_loss per source domain (seed mean), when the eval set records sources."""
    sources = sorted({s for g in groups.values() for r in g.judged for s in r.val_by_source()})
    if not sources:
        return None
    rows = []
    for label, g in groups.items():
        per = [r.val_by_source() for r in g.judged]
        rows.append([label] + [f"{_mean([p.get(s, math.nan) for p in per]):.4f}" if _finite([p.get(s, math.nan) for p in per]) else "n/a" for s in sources])
    return ["config"] + sources, rows


def gate_rows(groups: dict[str, ConfigGroup]) -> list[list[str]]:
    """Per gated config (RA, std-gated): max over layers of |w - w_init| for each gate (seed mean, and the largest)."""
    rows = []
    for label, g in groups.items():
        moves = [r.gate_movement() for r in g.judged]
        moves = [m for m in moves if m]
        if not moves:
            continue
        cells = []
        for gate in plots.GATE_NAMES:
            vals = _finite([m.get(gate, math.nan) for m in moves])
            cells.append(f"{_mean(vals):.4f} (max {max(vals):.4f})" if vals else "n/a")
        biggest = max(max(m.values()) for m in moves)
        rows.append([label] + cells + ["barely moved: too short to show what RA learns" if biggest < GATES_BARELY_MOVED else "moved"])
    return rows


def cautions(groups: dict[str, ConfigGroup], comparisons: list[Comparison]) -> list[str]:
    """Why the verdicts may say less than they seem to: thin evidence, in words."""
    out = []
    n_pairs = [v.stats.n for c in comparisons for v in c.verdicts if v.stats is not None]
    if n_pairs and max(n_pairs) < 2:
        out.append(f"one seed per comparison: no verdict is possible ({ONE_SEED_NOTE})")
    elif n_pairs and max(n_pairs) < 6:
        out.append(f"at most {max(n_pairs)} seed pairs: intervals are wide; {FEW_PAIRS_NOTE}")
    moved = [max(m.values()) for g in groups.values() for r in g.judged if (m := r.gate_movement())]
    if moved and max(moved) < GATES_BARELY_MOVED:
        out.append(f"the learned gates moved by at most {max(moved):.3f} from their initial values: the runs are too short to show what RA learns")
    sparse = sorted({r.name for g in groups.values() for r in g.judged if len(r.trained_evals) < MIN_EVALS})
    if sparse:
        out.append(f"{len(sparse)} run(s) have fewer than {MIN_EVALS} evaluations after iteration 0 ({', '.join(sparse[:4])}"
                   f"{', ...' if len(sparse) > 4 else ''}): their curves are straight lines between few points, and answers read between them are rough")
    sdpa = first_group(groups, BASELINE)
    drops = _finite([last_quarter_drop(r) for r in (sdpa.judged if sdpa else [])])
    if drops and _mean(drops) > STILL_FALLING:
        out.append(f"the baseline's val_loss still fell by {_mean(drops):.3f} over the last quarter of its run: far from convergence, so final losses are not converged losses")
    skipped = sorted(f"{r.name} ({r.skipped_records})" for g in groups.values() for r in g.runs if r.skipped_records)
    if skipped:
        out.append(f"metrics.jsonl lines skipped as unreadable or another run's, in {', '.join(skipped)}: "
                   "those runs' curves are read without them")
    shaky = unstable_names(groups)
    if shaky:
        out.append(f"{len(shaky)} judged run(s) became unstable ({', '.join(shaky)}): they stay in their pairs, and one such run "
                   "can dominate a mean over few pairs (see Training stability)")
    return out


# ---------------------------------------------------------------- sections


def runs_are_short(groups: dict[str, ConfigGroup]) -> bool:
    """Gates barely moved or the baseline still falling at its end: a verdict holds for this length only."""
    moved = [max(m.values()) for g in groups.values() for r in g.judged if (m := r.gate_movement())]
    sdpa = first_group(groups, BASELINE)
    drops = _finite([last_quarter_drop(r) for r in (sdpa.judged if sdpa else [])])
    return bool(moved and max(moved) < GATES_BARELY_MOVED) or bool(drops and _mean(drops) > STILL_FALLING)


def _cell(verdict: Verdict | None, short: bool) -> str:
    """The verdict, its dagger where the runs are short, and its raw and Holm-adjusted p."""
    if verdict is None:
        return ""
    word = verdict.verdict
    p = f" ({verdict.p_text()})" if verdict.p is not None else ""
    return _bold(word) + (" †" if short and word in (PASS, FAIL) else "") + p


def verdict_overview(doc: Doc, comparisons: list[Comparison], thin: list[str], short: bool = False) -> None:
    doc.heading(2, "Verdicts")
    doc.para(
        "Rule: per criterion, the paired mean margin over seeds with a 95% t-interval and the exact sign-flip p; PASS "
        "only when the interval's lower bound is above the margin fixed in the plan (default 0) and p < 0.05, FAIL only "
        "when its upper bound is below it and p < 0.05, INCONCLUSIVE otherwise; TOO FEW PAIRS from 2-5 seeds (p cannot "
        "go below 0.05: the direction only), NO VERDICT from a single seed or where the folder holds no runs to pair (no "
        "iso-time runs of that config, say). Pairs are formed by seed within one batch and one card (and one machine "
        "where the runs record it); a seed paired in two batches counts once, its pairs averaged, in the `seeds` column "
        f"and in every interval. Each cell gives the raw p and Holm's adjusted p over the family this table declares: "
        f"{family_size(comparisons)} tests, every cell with a p."
    )
    if not comparisons:
        doc.para("Nothing to judge: the folder needs sdpa runs and at least one other config with the same seeds.")
        return
    doc.table(
        ["candidate", "baseline", "seeds", "1 equal time", "2 plan's literal (< 1/s)", "2 break-even (< 1)", "3 final quality", "3 measured on"],
        [
            [c.candidate, c.baseline, str(max((v.stats.n for v in c.verdicts if v.stats), default=0))]
            + [_cell(c.verdict(k), short) for k in ("1", "2-literal", "2-break-even", "3")]
            + [c.verdict("3").scope if c.verdict("3") else ""]
            for c in comparisons
        ],
    )
    if short and any(v.verdict in (PASS, FAIL) for c in comparisons for v in c.verdicts):
        doc.para("† holds for runs of this length only: the gates barely moved or the baseline was still improving "
                 "at the end (see below), so a longer run can change it.")
    pooled = [f"{c.candidate} vs {c.baseline}: {len(c.units)} units ({'; '.join(c.units)})" for c in comparisons if len(c.units) > 1]
    if pooled:
        doc.para("Pairs pooled across batch/card units (each pair comes from one batch on one card):")
        doc.bullets(pooled)
    if thin:
        doc.para("**What these runs cannot carry:**")
        doc.bullets(thin)


def break_even_section(doc: Doc, comparisons: list[Comparison], out_dir: Path) -> None:
    doc.heading(2, "Break-even slowdown s*")
    doc.para("s*: the largest step-time ratio at which the candidate would still match the baseline's final val_loss "
             "at equal time. Compare it with the measured step-time ratio s on each card.")
    found = [c.lengths for c in comparisons if c.lengths is not None]
    if found:
        lengths_section(doc, found, lambda items: plots.plot_length_gaps(items, out_dir / LENGTHS_PLOT))
    doc.para(
        f"**From the N-run's curve: {CURVE_UPPER_BOUND}.** s* = N / n*, n* the first iteration at which the candidate's "
        "(interpolated) val_loss curve reaches the baseline's final val_loss at N. A run scheduled for n* iterations "
        "is not that curve: in the campaign's runs every equal-time run ended above its N-run's curve at the same "
        "iteration, so this reading leans high. Criterion 2 reads these curves only for seeds without an s* from run "
        "lengths, and says how many."
    )
    items = []
    for c in comparisons:
        if c.breakeven is None:
            continue
        items.append(c.breakeven.headline(f"{c.candidate} (vs {c.baseline})") + f" [from {c.breakeven.source}]")
    doc.bullets(items or ["no comparison"])
    details = [f"{c.candidate} vs {c.baseline}, {line}" for c in comparisons if c.breakeven for line in c.breakeven.lines]
    doc.bullets(details)


def criteria_details(doc: Doc, comparisons: list[Comparison]) -> None:
    doc.heading(2, "Success criteria in detail")
    for comp in comparisons:
        doc.heading(3, f"{comp.candidate} vs {comp.baseline}")
        doc.para(comp.purpose)
        doc.table(
            ["criterion", "verdict", "numbers", "evidence"],
            [[f"{v.key}. {v.title}" + (f" [{v.scope}]" if v.scope else ""), _bold(v.verdict), v.numbers, evidence(v.stats)] for v in comp.verdicts],
        )
        doc.bullets([f"criterion {v.key}, {line}" for v in comp.verdicts for line in v.per_seed] + comp.notes)


def family_size(comparisons: list[Comparison]) -> int:
    return sum(v.p is not None for c in comparisons for v in c.verdicts)


def _iter_gap_sentence(cand: str, base: str, gaps: IterGap, eq_margin: float) -> str:
    """The per-iteration gaps at each fraction, each with its equivalence test at eq_margin."""
    parts = []
    for f, st in zip(gaps.fractions, gaps.stats):
        parts.append(f"at {f:.0%} of the common iterations ({f * gaps.n_iters:,.0f}): {base} - {cand} {gap_text(st)}"
                     + (f" ({equivalence_text(st, eq_margin)})" if st is not None else ""))
    last = gaps.stats[-1]
    return f"{cand} vs {base}: " + "; ".join(parts) + f". {evidence(last)}"


def answer_questions(doc: Doc, groups: dict[str, ConfigGroup], comparisons: list[Comparison], design: str,
                     eq_margin: float) -> None:
    doc.heading(2, "The plan's five questions")
    sdpa = first_group(groups, BASELINE)
    ra = [g for g in main_groups(groups) if g.is_ra]
    confound = (
        "" if design == ITER_DESIGN else
        " (time design: each run's schedule is keyed to its own training time, so at equal iterations the runs sit at "
        "different learning rates; the iteration design removes this)"
    )
    doc.heading(3, "1. Does RA improve convergence speed (val_loss at equal iterations)?")
    if sdpa and ra:
        doc.bullets([_iter_gap_sentence(g.label, sdpa.label, iteration_gaps(g, sdpa, design), eq_margin) for g in ra])
        doc.para("Positive gaps: RA lower per iteration." + confound + " Per iteration is not per second: criterion 1 is judged at equal time.")
    else:
        doc.para("Not answerable here: needs sdpa and an RA config with the same seeds.")

    doc.heading(3, "2. Does RA improve sample efficiency (iterations to reach sdpa's final val_loss)?")
    items = []
    for c in comparisons:
        be = c.breakeven
        if c.baseline != BASELINE or be is None or c.candidate not in {g.label for g in ra}:
            continue
        if be.values:
            fractions = [1 / v for v in be.values]
            st = be.stats
            ci = f", 95% CI [{st.lo:.3f}, {st.hi:.3f}] over {st.n} seeds" if st.n > 1 else " (1 seed)"
            text = f"{c.candidate}: needs {_mean(fractions):.3f} of sdpa's iterations to reach its final val_loss (= 1/s*; s* = {st.mean:.3f}{ci})"
            if be.never:
                text += f"; never within N in {len(be.never)} seed(s)"
                median = be.median_text()
                if median is not None:
                    text += f", so over all {len(be.values) + len(be.never)} seeds the median s* is {median}"
            items.append(text + f". {evidence(st, null=1.0)}")
        elif be.never:
            items.append(f"{c.candidate}: never reached sdpa's final val_loss within its N iterations ({len(be.never)} seed(s)): no gain in sample efficiency seen")
    doc.bullets(items or ["no RA config paired with sdpa"])
    doc.para("s* = 1 means equal sample efficiency; the evidence asks whether the interval excludes 1." + confound)

    doc.heading(3, "3. Does RA improve final quality?")
    items = []
    for c in comparisons:
        v = c.verdict("3")
        if v is not None and c.baseline == BASELINE and c.candidate in {g.label for g in ra}:
            items.append(f"{c.candidate}: {_bold(v.verdict)} [{v.scope}]: {v.numbers}. {evidence(v.stats)}")
    doc.bullets(items or ["no RA config paired with sdpa"])

    doc.heading(3, "4. Where does RA help most (which layers, which training phase)?")
    layer_items = [s for s in (layer_sentence(g) for g in ra) if s]
    doc.para("By layer, from the learned gates (a gate that barely moved from its initial value says nothing about where RA helps):" if layer_items else "By layer: no gate values were logged.")
    doc.bullets(layer_items)
    if sdpa and ra:
        doc.para("By training phase: paired gap sdpa - RA at a third, two thirds and the end of the common iterations" + confound + ":")
        doc.bullets([_iter_gap_sentence(g.label, sdpa.label, iteration_gaps(g, sdpa, design, (1 / 3, 2 / 3, 1.0)), eq_margin) for g in ra])
    if sdpa:
        by_source = [(g.label, source_gaps(g, sdpa, design)) for g in ra]
        items = [f"{label}, {source}: sdpa - {label} {st.text()}. {evidence(st)}" for label, gaps in by_source for source, st in gaps.items()]
        if items:
            doc.para("By source domain of the eval set (final val_loss of equal-length runs, paired):")
            doc.bullets(items)
    controls = control_gaps(groups)
    if controls:
        doc.para("RA against its controls at equal iterations (std-gated: learned temperature only; ra-norec: same gates and "
                 "bias with w_rec = 0; ra-norec against std-gated isolates the discoverability bias):")
        doc.bullets([_iter_gap_sentence(c, b, gaps, eq_margin) for c, b, gaps in controls])

    doc.heading(3, "5. What is the minimum effective reciprocity?")
    variants = [g for g in candidate_groups(groups) if is_variant(g.attn)]  # iso-time-only ones too
    if not variants:
        doc.para("No reciprocity variant (ra-local, ra-layers, ra-anneal, ra-gated, ...) was run; this folder cannot answer it.")
        return
    rows = []
    by_candidate = {c.candidate: c for c in comparisons if c.baseline == BASELINE}
    for g in variants:
        c = by_candidate.get(g.label)
        v1 = c.verdict("1") if c else None
        be = c.breakeven if c else None
        ratio = "; ".join(r.text() for r in be.ratios.values()) if be and be.ratios else "n/a"
        s_star = "n/a"
        if be and be.stats:
            s_star = f"{be.stats.mean:.3f}" + (f" [{be.stats.lo:.3f}, {be.stats.hi:.3f}]" if be.stats.n > 1 else " (1 seed)")
            if be.never:
                s_star += f" over {be.stats.n} seeds; {len(be.never)} never reached it; median {be.median_text() or 'n/a'}"
        elif be and be.never:
            s_star = f"< {max(be.bounds):.2f} (never within its run)"
        if c is not None and c.lengths is not None and c.lengths.measured:
            s_star += "; from run lengths: " + "; ".join(c.lengths.censored() or [c.lengths.headline()])
        runs = g.runs or groups[iso_time_label(g.label)].runs  # an iso-time-only variant's stand-in has none
        rows.append([g.label, str(runs[0].config.get("attn_options") or {}), ratio, s_star, _bold(v1.verdict) if v1 else "n/a", evidence(v1.stats) if v1 else ""])
    doc.table(["variant", "options", "s (step-time ratio)", "s* (break-even) [95% CI]", "criterion 1 vs sdpa", "evidence (criterion 1)"], rows)
    doc.para("A variant pays off where s < s* with intervals that do not overlap; the cheapest such variant is the minimum effective reciprocity.")


def layer_sentence(group: ConfigGroup) -> str | None:
    profile = plots.final_gates_by_layer(group, "w_rec")
    if profile is None:
        return None
    layers = [(i, float(v)) for i, v in enumerate(profile) if math.isfinite(v)]
    values = ", ".join(f"L{i} {v:.3f}" for i, v in layers)
    return f"{group.label}: final w_rec by layer (mean over heads and seeds): {values}"


def step_ratio_section(doc: Doc, batches: list[Batch]) -> None:
    rows = []
    for b in batches:
        for attn, entry in sorted((b.calibration.get("configs") or {}).items()):
            r = b.calibrated_ratio(attn)
            ci = entry.get("ms_ci95") or []
            rows.append([b.name, f"{b.card_text} @ {b.calibration.get('host', '?')}", attn,
                         f"{entry.get('ms_per_iter', math.nan):.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else ""),
                         f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" if r else "n/a", str(b.calibration.get("compiled", "?")),
                         b.gpu_floor(attn) or ""])
    if rows:
        doc.heading(2, "Step-time calibration (per batch and card; ratios never mixed across cards)")
        doc.table(["batch", "card", "config", "ms/iter [95% CI]", "s vs sdpa [95% CI]", "compiled", "GPU-time floor"], rows)


def method_notes() -> list[str]:
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


# ---------------------------------------------------------------- assembling


Analysis = tuple[list[Batch], list[Batch], dict[str, ConfigGroup], list[Comparison]]


def analyse(folder: str | Path, horizon: str | None = None) -> Analysis:
    """Load every batch under `folder`, set aside what no suite made (beside suites), keep the
    batches of one horizon (None: all; see runs.horizon_of), group the runs and judge every comparison.
    Returns (judged batches, set-aside batches, groups, comparisons)."""
    batches, aside = split_suite_batches(load_batches(folder))
    if horizon is not None:
        batches = split_by_horizon(batches).get(horizon, [])
    return judge_batches(batches, aside)


def analyse_by_length(folder: str | Path) -> dict[str | None, Analysis]:
    """The folder read once and judged per training length, shortest first; a single entry keyed
    None when every batch has the same length."""
    batches, aside = split_suite_batches(load_batches(folder))
    lengths = split_by_horizon(batches)
    if len(lengths) <= 1:
        return {None: judge_batches(batches, aside)}
    return {horizon: judge_batches(part, aside) for horizon, part in lengths.items()}


def judge_batches(batches: list[Batch], aside: list[Batch]) -> Analysis:
    groups = group_by_config([r for b in batches for r in b.runs])
    comparisons = judge_all(groups, {b.name: b for b in batches})
    holm_family(comparisons)
    return batches, aside, groups, comparisons


def set_aside_lines(aside: list[Batch]) -> list[str]:
    return [f"`{b.name}/` ({len(b.runs)} runs): not made by `rabench suite` (no suite.json), set aside beside "
            f"the suite batches; run `rabench report` on it alone" for b in aside]


def build_report(folder: Path, out_dir: Path, analysis: Analysis, horizon: str | None = None) -> Doc:
    batches, aside, groups, comparisons = analysis
    runs = [r for b in batches for r in b.runs]
    design = design_of(groups)
    doc = Doc()
    doc.heading(1, f"rabench report: {folder.resolve().name}" + (f" ({horizon})" if horizon else ""))
    doc.bullets(header_lines(batches, runs, design))
    unjudged = set_aside_lines(aside) + unjudged_lines(runs)
    if design == ITER_DESIGN:
        timed = [r for r in runs if r.role == TIME]
        if timed:
            unjudged.append(f"{len(timed)} time-budget run(s) ({', '.join(sorted({r.batch for r in timed}))}) sit beside iteration-design runs: "
                            "they are not paired with them; run `rabench report` on their folder alone")
    if unjudged:
        doc.para("**Runs not judged:**")
        doc.bullets(unjudged)
    if first_group(groups, BASELINE) is None:
        doc.para("**No sdpa run in this folder**: nothing is judged against the baseline.")
    verdict_overview(doc, comparisons, cautions(groups, comparisons) + mixed_code_notes(batches) + calibration_notes(batches),
                     runs_are_short(groups))
    break_even_section(doc, comparisons, out_dir)
    cost_floor_section(doc, comparisons, groups)
    step_ratio_section(doc, batches)
    lr_sweep_section(doc, groups, batches, lambda points: plots.plot_lr_sweep(points, out_dir / LR_SWEEP_PLOT))
    plateau_section(doc, runs)
    doc.heading(2, "Runs by config")
    doc.table(*config_table(groups))
    sources = source_table(groups)
    if sources:
        doc.heading(3, "Final val_loss per source domain (seed mean)")
        doc.table(*sources)
    rows = gate_rows(groups)
    if rows:
        doc.heading(3, "How far the learned gates moved: max over layers of |w - w_init| (seed mean, largest seed)")
        doc.table(["config", "w_std", "w_rec", "w_disc", "reading"], rows)
    stability_section(doc, [r for g in groups.values() for r in g.judged], out_dir)
    doc.heading(2, "Plots")
    doc.para("Plots show judged runs only (finished, with an evaluation after iteration 0); the rest are listed above.")
    shown = {lb: ConfigGroup(lb, g.attn, g.role, g.judged) for lb, g in groups.items()
             if g.judged and g.role not in (LADDER, LR_SWEEP)}  # runs of other lengths or rates: their own sections
    doc.image(plots.plot_loss(shown, "time", out_dir / LOSS_PLOT.format("time")), "val_loss vs training time (seed mean, min-max band)")
    doc.image(plots.plot_loss(shown, "iter", out_dir / LOSS_PLOT.format("iter")), "val_loss vs iterations")
    doc.image(plots.plot_loss(shown, "tokens", out_dir / LOSS_PLOT.format("tokens")), "val_loss vs tokens")
    doc.image(plots.plot_ms_per_iter(shown, out_dir / MS_PLOT), "ms/iter per config with the ratio to sdpa (measured in the runs)")
    for label, group in shown.items():
        run = next((r for r in group.runs if r.gate_records), None)
        if run is not None:
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
            doc.image(plots.plot_gates(run, out_dir / GATES_PLOT.format(safe)), f"RA gates per layer over time, {run.name}")
    doc.image(plots.plot_final_w_rec(shown, out_dir / W_REC_PLOT), "final w_rec by layer")
    criteria_details(doc, comparisons)
    answer_questions(doc, groups, comparisons, design, equivalence_margin({b.name: b for b in batches}))
    doc.heading(2, "Notes on method")
    doc.bullets(method_notes())
    return doc


def summarize(folder: str | Path) -> str:
    """A few plain lines with each comparison's verdicts and s*, for a terminal (the demo's ending)."""
    lines = []
    for horizon, (batches, _, groups, comparisons) in analyse_by_length(folder).items():
        prefix = f"[{horizon}] " if horizon else ""
        lines.append(prefix + regime_text([r for b in batches for r in b.runs]))
        if not comparisons:
            lines.append(prefix + "Nothing to judge: the folder needs sdpa runs and another config with the same seeds.")
            continue
        for c in comparisons:
            words = ", ".join(f"criterion {v.key}: {v.verdict}" for v in c.verdicts)
            lines.append(f"{prefix}{c.candidate} vs {c.baseline}: {words}.")
            if c.lengths is not None and c.lengths.measured:
                lines.append("  " + c.lengths.headline())
            if c.breakeven is not None:
                lines.append("  " + c.breakeven.headline(c.candidate) + f" [from {c.breakeven.source}]")
        lines += [f"Caution: {text}." for text in cautions(groups, comparisons) + mixed_code_notes(batches) + calibration_notes(batches)]
    return "\n".join(lines)


def write_report(folder: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Analyse the runs under `folder`; write report.md, report.html and the PNGs to
    `out_dir` (default: `folder`). Returns (report.md, report.html).

    Batches trained for different lengths (a campaign's main runs and its longer horizon) are
    never pooled: each length gets its own report in `report-<length>/`, and report.md lists
    them with the headline gaps side by side, so the reader sees whether a gap grows or shrinks."""
    folder = Path(folder)
    out = Path(out_dir) if out_dir is not None else folder
    analyses = analyse_by_length(folder)
    out.mkdir(parents=True, exist_ok=True)  # the plots are drawn into it while the report is built
    if None in analyses:
        return write_doc(build_report(folder, out, analyses[None]), out, f"rabench report: {folder.resolve().name}")
    remove_single_length_plots(out)
    by_length = []
    for horizon, analysis in analyses.items():
        sub = out / f"report-{slug(horizon)}"
        sub.mkdir(exist_ok=True)
        write_doc(build_report(folder, sub, analysis, horizon), sub, f"rabench report: {folder.resolve().name} ({horizon})")
        regime = regime_text([r for b in analysis[0] for r in b.runs])
        by_length.append((horizon, sub.name, analysis[3], unstable_names(analysis[2]), regime))
    return write_doc(horizons_overview(folder, by_length), out, f"rabench report: {folder.resolve().name}")


def remove_single_length_plots(out: Path) -> None:
    """A folder reported once with one length and again with several (a longer horizon added)
    keeps its old plots beside the new top page, which shows none of them: they would read as
    current. Only the report's own plot names go; the per-length plots live in report-<length>/."""
    for pattern in REPORT_PLOT_PATTERNS:
        for path in out.glob(pattern):
            path.unlink()


def horizons_overview(folder: Path, by_length: list[tuple[str, str, list[Comparison], list[str], str]]) -> Doc:
    """The top page of a folder whose batches trained for different lengths."""
    doc = Doc()
    doc.heading(1, f"rabench report: {folder.resolve().name}")
    doc.para("The batches here trained for different lengths. Pairs from different lengths measure different "
             "things and are never pooled: each length has its own report.")
    doc.bullets([f"{horizon}: [{name}/report.md]({name}/report.md) ([html]({name}/report.html)); {regime}"
                 for horizon, name, _, _, regime in by_length])
    doc.heading(2, "Headline gaps by training length")
    doc.para("Criterion 1: the baseline's final val_loss minus the candidate's at equal training time (positive: the "
             "candidate lower). Criterion 3: the same at the end of equal-length runs (its proxy unless the runs "
             "went to a plateau). Each cell: the verdict by the exact-test rule, the interval over distinct seeds, the "
             "raw sign-flip p and Holm's adjusted p over that length's verdict table (its own report's family). "
             "Each length's regime is in the list above.")
    rows = []
    for horizon, _, comparisons, _, _ in by_length:
        for c in comparisons:
            cells = []
            for key in ("1", "3"):
                v = c.verdict(key)
                cells.append(f"{_bold(v.verdict)}: {v.stats.text()}" + (f", Holm {v.p_holm:.2g}" if v.p_holm is not None else "")
                             if v is not None and v.stats else
                             (_bold(v.verdict) if v is not None else "n/a"))
            rows.append([horizon, c.candidate, c.baseline, *cells])
    doc.table(["length", "candidate", "baseline", "criterion 1 (equal time)", "criterion 3 (final quality)"], rows)
    shaky = [f"{horizon}: {len(names)} run(s) became unstable ({', '.join(f'`{n}`' for n in names)}); they stay in "
             f"their pairs, and [{name}/report.md]({name}/report.md) says where (Training stability)"
             for horizon, name, _, names, _ in by_length if names]
    if shaky:
        doc.para("**Runs that became unstable** (a mean over few pairs can be dominated by one):")
        doc.bullets(shaky)
    return doc


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")


def write_doc(doc: Doc, out: Path, title: str) -> tuple[Path, Path]:
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(doc.markdown())
    html_path.write_text(doc.html(title))
    n_png = sum(1 for kind, _ in doc.blocks if kind == "image")
    plots_note = f" ({n_png} plots, also as PNG files in {out})" if n_png else ""
    print(f"wrote {md_path} and {html_path}{plots_note}")
    return md_path, html_path
