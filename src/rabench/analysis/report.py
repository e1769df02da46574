"""`rabench report DIR`: one markdown and one self-contained HTML report of a suite.

The report is built once as a list of blocks (headings, paragraphs, tables, images,
lists) and rendered twice: markdown that links the PNGs next to it, and HTML with the
same PNGs embedded as base64 so the file can be mailed around and opened offline.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rabench.analysis import plots
from rabench.analysis.criteria import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Comparison,
    first_group,
    fmt_seconds,
    judge_all,
    seed_pairs,
    slowdown,
)
from rabench.analysis.curves import common_range, eval_curve, fraction_lower, mean_gap, seed_band, time_to_reach, value_at
from rabench.analysis.runs import BASELINE, ConfigGroup, Run, group_by_config, load_runs

VARIANTS = ("ra-sparse", "ra-local", "ra-gated", "ra-anneal", "ra-layers", "ra-budget", "ra-amortized", "ra-lowrank", "ra-adaptive")
FULL_RA = ("ra-triton", "ra-open")
RA_GATE_INIT = 0.152


# ---------------------------------------------------------------- document model


@dataclass
class Doc:
    """Blocks of a report, rendered to markdown or HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.blocks.append(("image", (path, alt)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "para":
                out.append(value)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                headers, rows = value
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "image":
                out.append(f"![{value[1]}]({value[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
                rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(value[0].read_bytes()).decode("ascii")
                alt = html.escape(value[1])
                body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>')
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }} figcaption {{ color: #555; font-size: 0.85em; }}
.PASS {{ color: #0a7d2c; font-weight: bold; }} .FAIL {{ color: #b00020; font-weight: bold; }}
.INCONCLUSIVE {{ color: #9a6700; font-weight: bold; }}
</style></head>
<body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escape HTML, then render `code` spans and colour the verdict words."""
    escaped = html.escape(str(text))
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    escaped = "".join(parts)
    for word in (PASS, FAIL, INCONCLUSIVE):
        escaped = escaped.replace(f"**{word}**", f'<span class="{word}">{word}</span>')
    return escaped.replace("**", "")


# ---------------------------------------------------------------- small helpers


def _mean(values: list[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def _mean_sd(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _verdict(word: str) -> str:
    return f"**{word}**"


def _tokens(n: float) -> str:
    if not math.isfinite(n):
        return "n/a"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _suite_command(attns: list[str], extra: str = "") -> str:
    return f"`rabench suite --out <dir> --attn {','.join(attns)} --seeds 0,1,2{extra}` (with this suite's `--time`)"


# ---------------------------------------------------------------- header and tables


def _values(runs: list[Run], key: str) -> list[Any]:
    return sorted({str(r.config.get(key)) for r in runs})


def header_lines(runs: list[Run], groups: dict[str, ConfigGroup]) -> list[str]:
    cards = sorted({r.config.get("gpu_name") or f"none recorded (device {r.config.get('device', '?')})" for r in runs})
    budgets = set()
    for r in runs:
        c = r.config
        if c.get("time_budget_s"):
            budgets.add(f"{float(c['time_budget_s']):.0f} s of training time ({float(c['time_budget_s']) / 60:.1f} min)")
        if c.get("max_iters"):
            budgets.add(f"{c['max_iters']} iterations")
        if c.get("until_plateau"):
            budgets.add("until val_loss plateaus")
    seeds = sorted({r.seed for r in runs})
    per_config = "; ".join(f"{lb}: {len(g.runs)}" for lb, g in groups.items())
    lines = [
        f"card: {', '.join(cards)}" + ("  (**runs on different cards: times are not comparable**)" if len(cards) > 1 else ""),
        f"budget: {'; '.join(sorted(budgets)) or 'none recorded'}",
        f"seeds: {', '.join(map(str, seeds))} (runs per config: {per_config})",
        "time axis: training time (`train_time_s`), device-synchronised, excluding evaluation and compilation",
        f"model: {', '.join(_values(runs, 'preset'))}, batch {', '.join(_values(runs, 'batch_size'))} x "
        f"seq {', '.join(_values(runs, 'seq_len'))}, grad_accum {', '.join(_values(runs, 'grad_accum'))}, "
        f"world size {', '.join(_values(runs, 'world_size'))}, compile {', '.join(_values(runs, 'compile'))}, "
        f"torch {', '.join(_values(runs, 'torch_version'))}",
    ]
    for r in runs:
        if r.interrupted:
            lines.append(f"**{r.name} was interrupted** (status {r.status}): its metrics up to {fmt_seconds(r.train_time_s)} are used")
        elif r.status != "done":
            lines.append(f"**{r.name} ended with status {r.status}** ({r.stop_reason})")
        if not r.evals:
            lines.append(f"**{r.name} has no val_loss records**: it is left out of every loss comparison")
    return lines


def sdpa_target(run: Run, sdpa: ConfigGroup | None) -> float:
    """sdpa's final val_loss for the same seed (as criterion 2 uses), else the sdpa mean."""
    if sdpa is None:
        return math.nan
    same_seed = sdpa.run_for_seed(run.seed)
    if same_seed is not None and same_seed.evals:
        return same_seed.final_val_loss
    return _mean([r.final_val_loss for r in sdpa.runs])


def _time_to_target_cell(group: ConfigGroup, sdpa: ConfigGroup | None) -> str:
    targets = [sdpa_target(r, sdpa) for r in group.runs]
    if not any(math.isfinite(t) for t in targets):
        return "n/a (no sdpa val_loss)"
    times = [time_to_reach(*eval_curve(r, "time"), t) for r, t in zip(group.runs, targets)]
    reached = [t for t in times if t is not None]
    if not reached:
        shortfall = _mean([r.best_val_loss - t for r, t in zip(group.runs, targets)])
        return f"never (best val_loss stays {shortfall:+.4f} above the target, seed mean)"
    text = fmt_seconds(_mean(reached))
    if len(reached) < len(times):
        text += f" ({len(reached)}/{len(times)} seeds; others never)"
    return text


def config_table(groups: dict[str, ConfigGroup]) -> tuple[list[str], list[list[str]]]:
    """One row per config: what ran, how fast, how good, and how soon it matched sdpa."""
    sdpa = first_group(groups, BASELINE)
    headers = [
        "config", "seeds", "status", "iterations", "tokens", "ms/iter", "slowdown vs sdpa",
        "best val_loss", "final val_loss", "time to sdpa's final val_loss (same seed)",
    ]
    rows = []
    for label, group in groups.items():
        runs = group.runs
        statuses = sorted({r.status for r in runs})
        if any(not r.evals for r in runs):
            statuses.append("no val_loss in " + ", ".join(r.name for r in runs if not r.evals))
        s = slowdown(group, sdpa) if sdpa else math.nan
        rows.append([
            label,
            ",".join(map(str, group.seeds)),
            "; ".join(statuses),
            f"{_mean([r.iters for r in runs]):,.0f}",
            _tokens(_mean([r.tokens for r in runs])),
            _mean_sd([r.ms_per_iter for r in runs], 2),
            f"{s:.2f}x" if math.isfinite(s) else "n/a",
            _mean_sd([r.best_val_loss for r in runs]),
            _mean_sd([r.final_val_loss for r in runs]),
            _time_to_target_cell(group, sdpa),
        ])
    return headers, rows


# ---------------------------------------------------------------- the five questions


def equal_axis_gaps(cand: ConfigGroup, base: ConfigGroup, axis: str) -> list[dict[str, float]]:
    """Per seed: the last x both reached, both losses there, and the fraction of the common
    range where the candidate is lower."""
    out = []
    for seed, c, b in seed_pairs(cand, base):
        a_curve, b_curve = eval_curve(c, axis), eval_curve(b, axis)
        span = common_range([a_curve, b_curve])
        if span is None:
            continue
        x = span[1]
        out.append({
            "seed": seed, "x": x,
            "cand": float(value_at(*a_curve, x)), "base": float(value_at(*b_curve, x)),
            "frac": fraction_lower(a_curve, b_curve),
        })
    return out


def _gap_sentence(cand: str, base: str, gaps: list[dict[str, float]], axis_word: str, fmt) -> str:
    gap_values = [g["base"] - g["cand"] for g in gaps]
    at = fmt(_mean([g["x"] for g in gaps]))
    return (
        f"{cand}: at {axis_word} {at} (the last both reached) {base} {_mean_sd([g['base'] for g in gaps])} vs "
        f"{cand} {_mean_sd([g['cand'] for g in gaps])}, gap {_mean_sd(gap_values)} "
        f"({'lower' if _mean(gap_values) > 0 else 'not lower'}); {cand} lower on "
        f"{_mean([g['frac'] for g in gaps]):.0%} of the common {axis_word} range"
    )


def answer_convergence_per_iteration(doc: Doc, groups: dict[str, ConfigGroup], sdpa: ConfigGroup | None) -> None:
    doc.heading(3, "1. Does RA improve convergence speed (val_loss at equal iterations)?")
    ra = [g for g in groups.values() if g.is_ra]
    if not sdpa or not ra:
        doc.para(f"Not answerable from this folder (needs sdpa and an RA config): run {_suite_command(['sdpa', 'ra-triton'])}.")
        return
    items = []
    for g in ra:
        gaps = equal_axis_gaps(g, sdpa, "iter")
        items.append(_gap_sentence(g.label, BASELINE, gaps, "iteration", lambda x: f"{x:,.0f}") if gaps else f"{g.label}: no overlapping evaluations with sdpa")
    doc.bullets(items)
    doc.para("Per iteration is not per second: an RA config that wins here can still lose criterion 1, which is judged at equal training time.")


def answer_sample_efficiency(doc: Doc, groups: dict[str, ConfigGroup], sdpa: ConfigGroup | None) -> None:
    doc.heading(3, "2. Does RA improve sample efficiency (tokens to reach sdpa's final val_loss)?")
    ra = [g for g in groups.values() if g.is_ra]
    if not sdpa or not ra:
        doc.para(f"Not answerable from this folder: run {_suite_command(['sdpa', 'ra-triton'])}.")
        return
    items = []
    for g in ra:
        ratios, never, base_tokens, cand_tokens = [], [], [], []
        for seed, c, b in seed_pairs(g, sdpa):
            target = b.final_val_loss
            tb = time_to_reach(*eval_curve(b, "tokens"), target)
            tc = time_to_reach(*eval_curve(c, "tokens"), target)
            if tb is None or tb <= 0:
                continue
            if tc is None:
                never.append(seed)
                continue
            ratios.append(tc / tb)
            base_tokens.append(tb)
            cand_tokens.append(tc)
        if ratios:
            text = (
                f"{g.label}: reaches sdpa's final val_loss after {_tokens(_mean(cand_tokens))} tokens vs sdpa's "
                f"{_tokens(_mean(base_tokens))}: {_mean_sd(ratios, 3)}x sdpa's tokens "
                f"({'fewer' if _mean(ratios) < 1 else 'not fewer'})"
            )
            if never:
                text += f"; never reached it in seeds {never}"
        elif never:
            text = f"{g.label}: never reached sdpa's final val_loss within its run (seeds {never})"
        else:
            text = f"{g.label}: no usable seed pair with sdpa"
        items.append(text)
    doc.bullets(items)


def answer_final_quality(doc: Doc, groups: dict[str, ConfigGroup], comparisons: list[Comparison]) -> None:
    doc.heading(3, "3. Does RA improve final quality?")
    items = []
    for comp in comparisons:
        if comp.baseline == BASELINE and comp.candidate in groups and groups[comp.candidate].is_ra:
            v = comp.verdicts[2]
            items.append(f"{comp.candidate} vs sdpa: {_verdict(v.verdict)}: {v.numbers}")
    doc.bullets(items or ["no RA config was run against sdpa"])
    if not all(r.ran_to_plateau for g in groups.values() for r in g.runs):
        doc.para(
            "These runs stopped at a budget, not at a plateau, so they bound the final quality rather than measure it. "
            f"The plan's full test answers this: {_suite_command(['sdpa', 'std-gated', 'ra-triton'], ' --until-plateau')}."
        )


def phase_gaps(cand: ConfigGroup, base: ConfigGroup) -> list[float] | None:
    """Mean (base - cand) val_loss over the first, middle and last third of the common
    training-time range, averaged over seeds."""
    per_seed = []
    for _, c, b in seed_pairs(cand, base):
        a_curve, b_curve = eval_curve(c, "time"), eval_curve(b, "time")
        span = common_range([a_curve, b_curve])
        if span is None or span[1] <= span[0]:
            continue
        lo, hi = span
        edges = [lo + (hi - lo) * k / 3 for k in range(4)]
        per_seed.append([mean_gap(a_curve, b_curve, edges[k], edges[k + 1]) for k in range(3)])
    if not per_seed:
        return None
    return [_mean([s[k] for s in per_seed]) for k in range(3)]


def layer_sentence(group: ConfigGroup) -> str | None:
    profile = plots.final_gates_by_layer(group, "w_rec")
    if profile is None:
        return None
    layers = [(i, float(v)) for i, v in enumerate(profile) if math.isfinite(v)]
    top = sorted(layers, key=lambda p: -p[1])[:3]
    values = ", ".join(f"L{i} {v:.3f}" for i, v in layers)
    return (
        f"{group.label}: final w_rec by layer (mean over heads and seeds): {values}. Highest: "
        + ", ".join(f"L{i}" for i, _ in top)
        + f" (canonical init {RA_GATE_INIT}; a layer that pushed w_rec up uses reciprocity, one that pushed it to ~0 dropped it)"
    )


def answer_where(doc: Doc, groups: dict[str, ConfigGroup], sdpa: ConfigGroup | None) -> None:
    doc.heading(3, "4. Where does RA help most (which layers, which training phase)?")
    ra = [g for g in groups.values() if g.is_ra]
    layer_items = [s for s in (layer_sentence(g) for g in ra) if s]
    doc.para("By layer, from the learned gates:" if layer_items else "By layer: no gate values were logged (no RA config with gates in this folder).")
    doc.bullets(layer_items)
    if sdpa and ra:
        phase_items = []
        for g in ra:
            gaps = phase_gaps(g, sdpa)
            if gaps:
                best = max(range(3), key=lambda k: gaps[k] if math.isfinite(gaps[k]) else -math.inf)
                phase_items.append(
                    f"{g.label}: sdpa - {g.label} val_loss over the first / middle / last third of training time: "
                    + " / ".join(f"{x:+.4f}" for x in gaps)
                    + f" (positive: RA lower; most favourable to RA: the {('first', 'middle', 'last')[best]} third)"
                )
        doc.para("By training phase:")
        doc.bullets(phase_items or ["no overlapping curves with sdpa"])
    else:
        doc.para(f"By training phase: needs sdpa and an RA config: {_suite_command(['sdpa', 'ra-triton'])}.")
    layered = first_group(groups, "ra-layers")
    if layered:
        doc.para("Layer-selective RA (`ra-layers`), options " + str(layered.runs[0].config.get("attn_options") or {}) + ": see question 5's table.")
    else:
        doc.para(f"Layer-selective RA was not run; {_suite_command(['sdpa', 'ra-triton', 'ra-layers'])} tests the plan's middle-layers hypothesis.")


def _value_at_time(group: ConfigGroup, t: float) -> float:
    band = seed_band(group.runs, "time")
    return float(value_at(band.x, band.mean, t)) if band is not None else math.nan


def answer_minimum_reciprocity(doc: Doc, groups: dict[str, ConfigGroup], sdpa: ConfigGroup | None, comparisons: list[Comparison]) -> None:
    doc.heading(3, "5. What is the minimum effective reciprocity?")
    variants = [g for g in groups.values() if g.attn in VARIANTS]
    if not variants:
        doc.para(
            "No reciprocity variant was run. The runs that answer it: "
            + _suite_command(["sdpa", "ra-triton", "ra-local", "ra-sparse", "ra-lowrank", "ra-layers", "ra-anneal"])
            + " (and ra-gated, ra-budget, ra-amortized, ra-adaptive)."
        )
        return
    full = next((first_group(groups, name) for name in FULL_RA if first_group(groups, name)), None)
    shown = ([sdpa] if sdpa else []) + ([full] if full else []) + variants
    bands = [seed_band(g.runs, "time") for g in shown]
    ends = [b.x[-1] for b in bands if b is not None and len(b.x)]
    t_eq = min(ends) if ends else math.nan
    c1 = {c.candidate: c.verdicts[0].verdict for c in comparisons if c.baseline == BASELINE}
    rows = []
    for g in shown:
        loss = _value_at_time(g, t_eq)
        s = slowdown(g, sdpa) if sdpa else math.nan
        rows.append([
            g.label,
            str(g.runs[0].config.get("attn_options") or {}),
            _mean_sd([r.ms_per_iter for r in g.runs], 2),
            f"{s:.2f}x" if math.isfinite(s) else "n/a",
            f"{loss:.4f}" if math.isfinite(loss) else "n/a",
            f"{_value_at_time(sdpa, t_eq) - loss:+.4f}" if sdpa and math.isfinite(loss) else "n/a",
            f"{_value_at_time(full, t_eq) - loss:+.4f}" if full and math.isfinite(loss) else "n/a",
            _verdict(c1[g.label]) if g.label in c1 else "",
        ])
    doc.para(f"val_loss (seed mean) at the training time every config below reached, t = {fmt_seconds(t_eq)}:")
    doc.table(
        ["config", "options", "ms/iter", "slowdown", "val_loss at t", "gap to sdpa (+ = lower)", f"gap to {full.label if full else 'full RA'} (+ = lower)", "criterion 1 vs sdpa"],
        rows,
    )
    variant_labels = {g.label for g in variants}
    winners = [g for g in variants if g.label in variant_labels and c1.get(g.label) == PASS]
    if winners:
        cheapest = min(winners, key=lambda g: _mean([r.ms_per_iter for r in g.runs]))
        doc.para(
            "Variants that beat sdpa at equal training time (criterion 1 PASS): " + ", ".join(g.label for g in winners)
            + f". The cheapest, {cheapest.label} at {_mean([r.ms_per_iter for r in cheapest.runs]):.2f} ms/iter, is the "
            "least reciprocity that still paid off in this suite; the gap to full RA says how much of RA's gain it kept."
        )
    else:
        doc.para("No variant beat sdpa at equal training time (criterion 1 PASS) in this suite.")


# ---------------------------------------------------------------- assembling


def verdict_overview(doc: Doc, comparisons: list[Comparison]) -> None:
    doc.heading(2, "Verdicts")
    doc.para(
        "RA is worth it if (1) its val_loss is below sdpa's after the same training time, (2) it reaches sdpa's final "
        "val_loss in under 1/s of sdpa's time, s being the ms/iter slowdown measured in this suite, or (3) its converged "
        "val_loss is better by more than seed-to-seed noise. Each RA config is judged against sdpa; the learned-temperature "
        "control std-gated against sdpa and RA against std-gated where std-gated was run."
    )
    if not comparisons:
        doc.para("No RA config or control was run, so there is nothing to judge.")
        return
    doc.table(
        ["candidate", "baseline", "purpose", "s", "1 equal time", "2 time to target", "3 final quality"],
        [
            [c.candidate, c.baseline, c.purpose, f"{c.slowdown:.2f}" if math.isfinite(c.slowdown) else "n/a"]
            + [_verdict(v.verdict) for v in c.verdicts]
            for c in comparisons
        ],
    )
    doc.para("s: the candidate's ms/iter over the baseline's, measured in this suite. Numbers behind each verdict: section 'Success criteria'.")


def criteria_details(doc: Doc, comparisons: list[Comparison]) -> None:
    doc.heading(2, "Success criteria")
    for comp in comparisons:
        doc.heading(3, f"{comp.candidate} vs {comp.baseline}")
        doc.para(comp.purpose + (f"; seeds paired: {comp.seeds}" if comp.seeds else ""))
        doc.table(["criterion", "verdict", "numbers"], [[f"{v.criterion}. {v.title}", _verdict(v.verdict), v.numbers] for v in comp.verdicts])
        details = [f"criterion {v.criterion}, {line}" for v in comp.verdicts for line in v.per_seed]
        doc.bullets(details + comp.notes)


def method_notes(single_seed: bool) -> list[str]:
    notes = [
        "Verdict rule, per criterion: a per-seed margin (1: baseline - candidate val_loss at the last training time both "
        "reached; 2: 1/s - candidate time / baseline time to the baseline's final val_loss; 3: baseline - candidate final "
        "val_loss). FAIL if the mean margin is <= 0 (for 3: <= the pooled seed-to-seed sd of the final val_loss); PASS if "
        "it is above and, with 2 or more seeds, a paired t-test gives p < 0.05; otherwise INCONCLUSIVE. Criterion 2 is "
        "FAIL when no seed reached the target and INCONCLUSIVE when only some did; criterion 3 is INCONCLUSIVE unless "
        "both sides ran to a plateau and there are 2 or more seeds.",
        "Statistics: runs are paired by seed. The p-value is from a two-sided paired Student t-test, its CDF computed "
        "from the regularised incomplete beta function (continued fraction), since scipy is not a dependency. The exact "
        "sign-flip permutation p-value is shown beside it; it assumes no distribution but cannot go below 2/2^n "
        "(0.25 with 3 seeds).",
        "Curves are compared by linear interpolation between evaluations, never extrapolated; the time to a target "
        "loss is interpolated between the two evaluations around the crossing.",
        "Criterion 2 as the plan states it is strict: on a training-time axis, reaching the target in 1/s of the "
        "baseline's time means needing fewer than 1/s^2 of its iterations. Break-even per second is a time ratio "
        "below 1, which criterion 1 and the 'time to sdpa's final val_loss' column show.",
    ]
    if single_seed:
        notes.insert(0, "**One seed per config: a verdict needs more seeds.** Criteria 1 and 2 are point estimates without a noise estimate; criterion 3 is INCONCLUSIVE.")
    return notes


def build_report(folder: Path, out_dir: Path) -> Doc:
    runs = load_runs(folder)
    groups = group_by_config(runs)
    sdpa = first_group(groups, BASELINE)
    comparisons = judge_all(groups)
    doc = Doc()
    doc.heading(1, f"rabench report: {folder.resolve().name}")
    doc.bullets(header_lines(runs, groups))
    if not sdpa:
        doc.para("**No sdpa run in this folder**: every criterion against sdpa is INCONCLUSIVE.")
    verdict_overview(doc, comparisons)
    headers, rows = config_table(groups)
    doc.heading(2, "Runs by config")
    doc.table(headers, rows)
    doc.heading(2, "Plots")
    doc.image(plots.plot_loss(groups, "time", out_dir / "val_loss_vs_time.png"), "val_loss vs training time (seed mean, min-max band)")
    doc.image(plots.plot_loss(groups, "iter", out_dir / "val_loss_vs_iter.png"), "val_loss vs iterations")
    doc.image(plots.plot_loss(groups, "tokens", out_dir / "val_loss_vs_tokens.png"), "val_loss vs tokens")
    doc.image(plots.plot_ms_per_iter(groups, out_dir / "ms_per_iter.png"), "ms/iter per config with the ratio to sdpa")
    for label, group in groups.items():
        run = next((r for r in group.runs if r.gate_records), None)
        if run is not None:
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
            doc.image(plots.plot_gates(run, out_dir / f"gates_{safe}.png"), f"RA gates per layer over time, {run.name}")
    doc.image(plots.plot_final_w_rec(groups, out_dir / "final_w_rec_by_layer.png"), "final w_rec by layer")
    criteria_details(doc, comparisons)
    doc.heading(2, "The plan's five questions")
    answer_convergence_per_iteration(doc, groups, sdpa)
    answer_sample_efficiency(doc, groups, sdpa)
    answer_final_quality(doc, groups, comparisons)
    answer_where(doc, groups, sdpa)
    answer_minimum_reciprocity(doc, groups, sdpa, comparisons)
    doc.heading(2, "Notes on method")
    doc.bullets(method_notes(single_seed=all(len(g.runs) == 1 for g in groups.values())))
    return doc


def write_report(folder: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Analyse the runs under `folder`; write report.md, report.html and the PNGs to
    `out_dir` (default: `folder`). Returns (report.md, report.html)."""
    folder = Path(folder)
    out = Path(out_dir) if out_dir is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    doc = build_report(folder, out)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(doc.markdown())
    html_path.write_text(doc.html(f"rabench report: {folder.resolve().name}"))
    n_png = sum(1 for kind, _ in doc.blocks if kind == "image")
    print(f"wrote {md_path} and {html_path} ({n_png} plots, also as PNG files in {out})")
    return md_path, html_path
