"""The report's pages: one training length's report, the top page over several lengths, and
writing either to report.md and report.html.

A page is only the order of its sections; what each says lives in sections.py and questions.py.
"""

from __future__ import annotations

from pathlib import Path

from rabench.analysis import plots
from rabench.analysis.cost_floor import cost_floor_section
from rabench.analysis.criteria import Comparison, design_of, equivalence_margin
from rabench.analysis.document import Doc
from rabench.analysis.lrsweep import LR_SWEEP_PLOT, lr_sweep_section
from rabench.analysis.plateau import plateau_section
from rabench.analysis.report.cautions import all_cautions, runs_are_short
from rabench.analysis.report.questions import answer_questions, criteria_details, verdict_overview
from rabench.analysis.report.sections import (REPORT_PLOT_PATTERNS, break_even_section, header_section,
                                              method_section, plots_section, runs_by_config_section,
                                              stability_section, step_ratio_section)
from rabench.analysis.report.wording import bold
from rabench.analysis.runs import Batch, ConfigGroup

# (judged batches, set-aside batches, groups, comparisons): one training length's runs, judged
Analysis = tuple[list[Batch], list[Batch], dict[str, ConfigGroup], list[Comparison]]


def build_report(folder: Path, out_dir: Path, analysis: Analysis, horizon: str | None = None) -> Doc:
    """One length's report, its plots drawn into `out_dir`: verdicts first, then what they rest on."""
    batches, aside, groups, comparisons = analysis
    runs = [r for b in batches for r in b.runs]
    design = design_of(groups)
    doc = Doc()
    doc.heading(1, f"rabench report: {folder.resolve().name}" + (f" ({horizon})" if horizon else ""))
    header_section(doc, batches, aside, groups, design)
    verdict_overview(doc, comparisons, all_cautions(groups, comparisons, batches), runs_are_short(groups))
    break_even_section(doc, comparisons, out_dir)
    cost_floor_section(doc, comparisons, groups)
    step_ratio_section(doc, batches)
    lr_sweep_section(doc, groups, batches, lambda points: plots.plot_lr_sweep(points, out_dir / LR_SWEEP_PLOT))
    plateau_section(doc, runs)
    runs_by_config_section(doc, groups)
    stability_section(doc, [r for g in groups.values() for r in g.judged], out_dir)
    plots_section(doc, groups, out_dir)
    criteria_details(doc, comparisons)
    answer_questions(doc, groups, comparisons, design, equivalence_margin({b.name: b for b in batches}))
    method_section(doc)
    return doc


# one length of a folder trained for several: (length, its subfolder, comparisons, unstable runs, regime)
LengthEntry = tuple[str, str, list[Comparison], list[str], str]


def horizons_overview(folder: Path, by_length: list[LengthEntry]) -> Doc:
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
    rows = [[horizon, c.candidate, c.baseline, *(headline_cell(c, key) for key in ("1", "3"))]
            for horizon, _, comparisons, _, _ in by_length for c in comparisons]
    doc.table(["length", "candidate", "baseline", "criterion 1 (equal time)", "criterion 3 (final quality)"], rows)
    shaky = [f"{horizon}: {len(names)} run(s) became unstable ({', '.join(f'`{n}`' for n in names)}); they stay in "
             f"their pairs, and [{name}/report.md]({name}/report.md) says where (Training stability)"
             for horizon, name, _, names, _ in by_length if names]
    if shaky:
        doc.para("**Runs that became unstable** (a mean over few pairs can be dominated by one):")
        doc.bullets(shaky)
    return doc


def headline_cell(c: Comparison, key: str) -> str:
    """A criterion's verdict with its interval, raw p and Holm p, for the table across lengths."""
    v = c.verdict(key)
    if v is None:
        return "n/a"
    if not v.stats:
        return bold(v.verdict)
    return f"{bold(v.verdict)}: {v.stats.text()}" + (f", Holm {v.p_holm:.2g}" if v.p_holm is not None else "")


def remove_single_length_plots(out: Path) -> None:
    """A folder reported once with one length and again with several (a longer horizon added)
    keeps its old plots beside the new top page, which shows none of them: they would read as
    current. Only the report's own plot names go; the per-length plots live in report-<length>/."""
    for pattern in REPORT_PLOT_PATTERNS:
        for path in out.glob(pattern):
            path.unlink()


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
