"""The report's sections besides the plan's questions: one function per section, in page order.

Each takes the Doc and what it reads, and adds its heading and blocks; the page (pages.py) only
chooses the order, so a section can be read, changed or tested alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rabench.analysis import plots
from rabench.analysis.criteria import ITER_DESIGN, Comparison, first_group
from rabench.analysis.document import Doc
from rabench.analysis.lengths import CURVE_UPPER_BOUND, lengths_section
from rabench.analysis.lrsweep import LR_SWEEP_PLOT
from rabench.analysis.regime import regime_text, selection_runs, verdict_runs
from rabench.analysis.report.cautions import GATES_BARELY_MOVED, STABILITY_RULE, stability_lines, unstable
from rabench.analysis.report.wording import design_text, finite_only, mean_of, mean_sd, method_notes
from rabench.analysis.runs import BASELINE, LADDER, LR_SWEEP, TIME, Batch, ConfigGroup, Run

# the report's plot files: the sections draw them, remove_single_length_plots clears stale ones
LOSS_PLOT = "val_loss_vs_{}.png"  # an axis: time, iter, tokens
MS_PLOT = "ms_per_iter.png"
GATES_PLOT = "gates_{}.png"  # a config label, made safe for a file name
W_REC_PLOT = "final_w_rec_by_layer.png"
LENGTHS_PLOT = "break_even_lengths.png"
STABILITY_PLOT = "stability_{}.png"  # <batch>_<run> of a run that became unstable
REPORT_PLOT_PATTERNS = (*(LOSS_PLOT.format(axis) for axis in ("time", "iter", "tokens")), MS_PLOT,
                        GATES_PLOT.format("*"), W_REC_PLOT, STABILITY_PLOT.format("*"), LENGTHS_PLOT, LR_SWEEP_PLOT)


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
    lines = [
        regime_text(runs),
        f"design: {design_text(design, calibrated=any(b.calibration for b in batches))}",
        f"batches (suite folders): {len(batches)}: " + ", ".join(f"`{b.name}` ({len(b.runs)} runs)" for b in batches),
        f"cards (gpu @ host): {'; '.join(cards)}"
        + ("  (runs are paired only within one batch and one card; step-time ratios are never mixed across cards)" if len(cards) > 1 or len(batches) > 1 else ""),
        f"budgets: {'; '.join(sorted(budgets)) or 'none recorded'}",
        seeds_line(runs),
        "time axis: training time (`train_time_s`), device-synchronised, excluding evaluation and compilation",
    ]
    machines = sorted({r.machine_id for r in runs if r.machine_id})
    unknown = sum(r.machine_id is None for r in runs)
    lines.append(f"machines (machine_id: GPU UUIDs + boot id): {len(machines)} recorded"
                 + (f"; {unknown} run(s) record none (older folders: pairs cannot be shown to share a machine)" if unknown else ""))
    if any(b.source_hashes for b in batches):
        lines.append("code (hash of rabench's Python sources): " + "; ".join(
            f"`{b.name}` {', '.join(b.source_hashes) or 'not recorded'}" for b in batches))
    changes = plan_change_texts(batches)
    if changes:
        lines.append("plan changed after runs had finished (suite.json `plan_changes`): " + "; ".join(changes))
    return lines


def plan_change_texts(batches: list[Batch]) -> list[str]:
    """Each recorded change of a batch's plan made after some of its runs had finished: what was
    fixed before which evidence. A hand-edited entry is shown as far as it reads, never an error."""
    out = []
    for b in batches:
        for entry in b.plan.get("plan_changes") or []:
            changed = entry.get("changed") if isinstance(entry, dict) else None
            if isinstance(changed, dict) and changed:
                what = ", ".join(f"{key} {_plan_value(pair, 0)} -> {_plan_value(pair, 1)}"
                                 for key, pair in changed.items())
                out.append(f"`{b.name}` at {entry.get('at') or 'an unrecorded time'}: {what}")
    return out


def _plan_value(pair: Any, i: int) -> str:
    """One side of a recorded [old, new] pair, as a plan would write it."""
    value = pair[i] if isinstance(pair, list) and len(pair) == 2 else "?"
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def seeds_line(runs: list[Run]) -> str:
    """The verdict runs' seeds, and an lr sweep's selection seeds apart (never paired)."""
    line = f"seeds: {', '.join(map(str, sorted({r.seed for r in verdict_runs(runs)}))) or 'no verdict run yet'}"
    selection = sorted({r.seed for r in selection_runs(runs)})
    return line + (f"; lr-sweep selection seeds (never paired): {', '.join(map(str, selection))}" if selection else "")


def set_aside_lines(aside: list[Batch]) -> list[str]:
    return [f"`{b.name}/` ({len(b.runs)} runs): not made by `rabench suite` (no suite.json), set aside beside "
            f"the suite batches; run `rabench report` on it alone" for b in aside]


def unjudged_lines(runs: list[Run]) -> list[str]:
    out = []
    for r in runs:
        if not r.finished:
            last = int(r.last_record.get("iter", 0) or 0)
            out.append(f"`{r.where}`: **{r.status_word}** (state {r.state}, last logged iteration {last}): listed, never judged")
        elif r.summary_mismatch:
            out.append(f"`{r.where}`: finished, but {r.summary_mismatch}: never judged")
        elif not r.trained_evals:
            out.append(f"`{r.where}`: finished but has no evaluation after iteration 0: never judged")
    return out


def time_runs_beside_iteration_design(runs: list[Run], design: str) -> list[str]:
    """Time-budget runs in an iteration-design folder have no partner of their kind: say so, never pair them."""
    timed = [r for r in runs if r.role == TIME] if design == ITER_DESIGN else []
    if not timed:
        return []
    return [f"{len(timed)} time-budget run(s) ({', '.join(sorted({r.batch for r in timed}))}) sit beside iteration-design runs: "
            "they are not paired with them; run `rabench report` on their folder alone"]


def header_section(doc: Doc, batches: list[Batch], aside: list[Batch], groups: dict[str, ConfigGroup], design: str) -> None:
    """What ran and where, then every run the verdicts leave out: a reader sees the denominators first."""
    runs = [r for b in batches for r in b.runs]
    doc.bullets(header_lines(batches, runs, design))
    unjudged = set_aside_lines(aside) + unjudged_lines(runs) + time_runs_beside_iteration_design(runs, design)
    if unjudged:
        doc.para("**Runs not judged:**")
        doc.bullets(unjudged)
    if first_group(groups, BASELINE) is None:
        doc.para("**No sdpa run in this folder**: nothing is judged against the baseline.")


# ---------------------------------------------------------------- step time and break-even


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
        "is not that curve: its learning rate anneals on a shorter schedule, and in rabench's own measurements every "
        "equal-time run ended above its N-run's curve at the same iteration (notes/report-rules.md), so this reading "
        "is taken as an upper bound; the s* from real run lengths above is the one to quote. Criterion 2 reads these "
        "curves only for seeds without an s* from run lengths, and says how many."
    )
    items = []
    for c in comparisons:
        if c.breakeven is None:
            continue
        items.append(c.breakeven.headline(f"{c.candidate} (vs {c.baseline})") + f" [from {c.breakeven.source}]")
    doc.bullets(items or ["no comparison"])
    details = [f"{c.candidate} vs {c.baseline}, {line}" for c in comparisons if c.breakeven for line in c.breakeven.lines]
    doc.bullets(details)


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


# ---------------------------------------------------------------- runs by config


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
            f"{mean_of([r.iters for r in judged]):,.0f}" if judged else "n/a",
            mean_sd([r.ms_per_iter for r in judged], 2),
            mean_sd([r.final_val_loss for r in judged]),
            f"{mean_of([r.final_val_se for r in judged]):.4f}" if finite_only([r.final_val_se for r in judged]) else "not recorded",
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
        rows.append([label] + [f"{mean_of([p.get(s, math.nan) for p in per]):.4f}" if finite_only([p.get(s, math.nan) for p in per]) else "n/a" for s in sources])
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
            vals = finite_only([m.get(gate, math.nan) for m in moves])
            cells.append(f"{mean_of(vals):.4f} (max {max(vals):.4f})" if vals else "n/a")
        biggest = max(max(m.values()) for m in moves)
        rows.append([label] + cells + ["barely moved: too short to show what RA learns" if biggest < GATES_BARELY_MOVED else "moved"])
    return rows


def runs_by_config_section(doc: Doc, groups: dict[str, ConfigGroup]) -> None:
    """What ran per config, its final loss per source domain, and how far its gates moved."""
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


# ---------------------------------------------------------------- stability and plots


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


def plots_section(doc: Doc, groups: dict[str, ConfigGroup], out_dir: Path) -> None:
    """Loss curves on three axes, step times and the gates, of the judged main runs."""
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


def method_section(doc: Doc) -> None:
    doc.heading(2, "Notes on method")
    doc.bullets(method_notes())
