"""`rabench report DIR`: report.md and a self-contained report.html for a suite or campaign.

The report says only what the runs carry: verdicts come from paired intervals
(criteria.py, stats.py); where the evidence is thin (one seed, gates barely moved, runs
still improving at their end) it says so beside the numbers instead of a stronger word.

A map of this package:
    __init__.py   the entry points: analyse a folder, write its report, summarize it for a terminal
    pages.py      a page as the order of its sections; writing report.md and report.html
    sections.py   one function per section besides the plan's questions (header, s*, tables, plots, ...)
    questions.py  the plan's three success criteria and its five questions, one function per question
    cautions.py   what the runs cannot carry (few seeds, short or unstable runs, mixed code)
    wording.py    numbers, verdict and evidence words, and sentences the sections share
Why each rule is there: notes/report-rules.md.
"""

from __future__ import annotations

from pathlib import Path

from rabench.analysis.criteria import holm_family, judge_all
from rabench.analysis.regime import regime_text
from rabench.analysis.report.cautions import all_cautions, unstable_names
from rabench.analysis.report.pages import (Analysis, build_report, horizons_overview, remove_single_length_plots,
                                           slug, write_doc)
from rabench.analysis.runs import Batch, group_by_config, load_batches, split_by_horizon, split_suite_batches

__all__ = ["Analysis", "analyse", "analyse_by_length", "summarize", "write_report"]


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
        lines += [f"Caution: {text}." for text in all_cautions(groups, comparisons, batches)]
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
