"""What the benchmark plan asks, answered: its three success criteria and its five questions.

The criteria get a verdict each (the table and its details); the questions get readings with
their evidence, one function per question, so each answer can be found by the question it
answers. The numbers come from criteria.py; this module only says them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rabench.analysis import plots
from rabench.analysis.criteria import (ITER_DESIGN, PLATEAU_DESIGN, Comparison, candidate_groups, control_gaps,
                                       first_group, iteration_gaps, main_groups, source_gaps)
from rabench.analysis.document import Doc
from rabench.analysis.report.wording import (PLATEAU_DESIGN_CONFOUND, TIME_DESIGN_CONFOUND, bold, evidence,
                                             iter_gap_sentence, mean_of, verdict_cell, verdict_rule)
from rabench.analysis.runs import BASELINE, ConfigGroup, is_variant, iso_time_label
from rabench.stats import FAIL, PASS

# ---------------------------------------------------------------- the three criteria


def family_size(comparisons: list[Comparison]) -> int:
    """How many tests the verdict table holds: Holm's family, named beside it."""
    return sum(v.p is not None for c in comparisons for v in c.verdicts)


def row_seeds(c: Comparison) -> int:
    """The verdict table's `seeds`: the most pairs any criterion of this comparison has."""
    return max((v.stats.n for v in c.verdicts if v.stats), default=0)


def verdict_row(c: Comparison, short: bool) -> list[str]:
    """One comparison's row of the verdict table."""
    seeds = row_seeds(c)
    return ([c.candidate, c.baseline, str(seeds)]
            + [verdict_cell(c.verdict(k), short, seeds) for k in ("1", "2-literal", "2-break-even", "3")]
            + [c.verdict("3").scope if c.verdict("3") else ""])


def verdict_overview(doc: Doc, comparisons: list[Comparison], thin: list[str], short: bool = False) -> None:
    """One row per comparison, one cell per criterion, then what the runs cannot carry."""
    doc.heading(2, "Verdicts")
    doc.para(verdict_rule(family_size(comparisons)))
    if not comparisons:
        doc.para("Nothing to judge: the folder needs sdpa runs and at least one other config with the same seeds.")
        return
    doc.table(
        ["candidate", "baseline", "seeds", "1 equal time", "2 plan's literal (< 1/s)", "2 break-even (< 1)", "3 final quality", "3 measured on"],
        [verdict_row(c, short) for c in comparisons],
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


def criteria_details(doc: Doc, comparisons: list[Comparison]) -> None:
    """Per comparison, each criterion's numbers, evidence and per-seed margins."""
    doc.heading(2, "Success criteria in detail")
    for comp in comparisons:
        doc.heading(3, f"{comp.candidate} vs {comp.baseline}")
        doc.para(comp.purpose)
        doc.table(
            ["criterion", "verdict", "numbers", "evidence"],
            [[f"{v.key}. {v.title}" + (f" [{v.scope}]" if v.scope else ""), bold(v.verdict), v.numbers, evidence(v.stats)] for v in comp.verdicts],
        )
        doc.bullets([f"criterion {v.key}, {line}" for v in comp.verdicts for line in v.per_seed] + comp.notes)


# ---------------------------------------------------------------- the five questions


@dataclass(frozen=True)
class Asked:
    """What every question reads: the judged groups and comparisons, the baseline and RA groups,
    and the caveat a per-iteration reading carries in the time design."""

    groups: dict[str, ConfigGroup]
    comparisons: list[Comparison]
    design: str
    eq_margin: float
    sdpa: ConfigGroup | None
    ra: list[ConfigGroup]
    confound: str

    def ra_against_sdpa(self) -> list[Comparison]:
        """The comparisons of a main RA config against the baseline, the ones questions 2 and 3 read."""
        labels = {g.label for g in self.ra}
        return [c for c in self.comparisons if c.baseline == BASELINE and c.candidate in labels]


def confound_of(design: str) -> str:
    """The caveat a per-iteration reading carries in the design ('' in the iteration design)."""
    return {ITER_DESIGN: "", PLATEAU_DESIGN: PLATEAU_DESIGN_CONFOUND}.get(design, TIME_DESIGN_CONFOUND)


def answer_questions(doc: Doc, groups: dict[str, ConfigGroup], comparisons: list[Comparison], design: str,
                     eq_margin: float) -> None:
    doc.heading(2, "The plan's five questions")
    asked = Asked(groups, comparisons, design, eq_margin, first_group(groups, BASELINE),
                  [g for g in main_groups(groups) if g.is_ra], confound_of(design))
    convergence_speed(doc, asked)
    sample_efficiency(doc, asked)
    final_quality(doc, asked)
    where_ra_helps(doc, asked)
    minimum_reciprocity(doc, asked)


def convergence_speed(doc: Doc, asked: Asked) -> None:
    doc.heading(3, "1. Does RA improve convergence speed (val_loss at equal iterations)?")
    sdpa = asked.sdpa
    if not (sdpa and asked.ra):
        doc.para("Not answerable here: needs sdpa and an RA config with the same seeds.")
        return
    doc.bullets([iter_gap_sentence(g.label, sdpa.label, iteration_gaps(g, sdpa, asked.design), asked.eq_margin)
                 for g in asked.ra])
    doc.para("Positive gaps: RA lower per iteration." + asked.confound + " Per iteration is not per second: criterion 1 is judged at equal time.")


def sample_efficiency(doc: Doc, asked: Asked) -> None:
    doc.heading(3, "2. Does RA improve sample efficiency (iterations to reach sdpa's final val_loss)?")
    lines = (sample_efficiency_line(c) for c in asked.ra_against_sdpa() if c.breakeven is not None)
    items = [line for line in lines if line]
    doc.bullets(items or ["no RA config paired with sdpa"])
    doc.para("s* = 1 means equal sample efficiency; the evidence asks whether the interval excludes 1." + asked.confound)


def sample_efficiency_line(c: Comparison) -> str | None:
    """The fraction of sdpa's iterations the candidate needs (1/s*), or that it never got there."""
    be = c.breakeven
    if be.values:
        st = be.stats
        ci = f", 95% CI [{st.lo:.3f}, {st.hi:.3f}] over {st.n} seeds" if st.n > 1 else " (1 seed)"
        text = (f"{c.candidate}: needs {mean_of([1 / v for v in be.values]):.3f} of sdpa's iterations to reach its final "
                f"val_loss (= 1/s*; s* = {st.mean:.3f}{ci})")
        if be.never:
            text += f"; never within N in {len(be.never)} seed(s)"
            median = be.median_text()
            if median is not None:
                text += f", so over all {len(be.values) + len(be.never)} seeds the median s* is {median}"
        return text + f". {evidence(st, null=1.0)}"
    if be.never:
        return (f"{c.candidate}: never reached sdpa's final val_loss within its N iterations ({len(be.never)} seed(s)): "
                "no gain in sample efficiency seen")
    return None


def final_quality(doc: Doc, asked: Asked) -> None:
    doc.heading(3, "3. Does RA improve final quality?")
    items = [f"{c.candidate}: {bold(v.verdict)} [{v.scope}]: {v.numbers}. {evidence(v.stats)}"
             for c in asked.ra_against_sdpa() if (v := c.verdict("3")) is not None]
    doc.bullets(items or ["no RA config paired with sdpa"])


def where_ra_helps(doc: Doc, asked: Asked) -> None:
    """By layer (the learned gates), by training phase, by source domain, and against the controls."""
    doc.heading(3, "4. Where does RA help most (which layers, which training phase)?")
    sdpa, ra = asked.sdpa, asked.ra
    layer_items = [s for s in (layer_sentence(g) for g in ra) if s]
    doc.para("By layer, from the learned gates (a gate that barely moved from its initial value says nothing about where RA helps):" if layer_items else "By layer: no gate values were logged.")
    doc.bullets(layer_items)
    if sdpa and ra:
        doc.para("By training phase: paired gap sdpa - RA at a third, two thirds and the end of the common iterations" + asked.confound + ":")
        doc.bullets([iter_gap_sentence(g.label, sdpa.label, iteration_gaps(g, sdpa, asked.design, (1 / 3, 2 / 3, 1.0)), asked.eq_margin)
                     for g in ra])
    if sdpa:
        by_source = [(g.label, source_gaps(g, sdpa, asked.design)) for g in ra]
        items = [f"{label}, {source}: sdpa - {label} {st.text()}. {evidence(st)}" for label, gaps in by_source for source, st in gaps.items()]
        if items:
            doc.para("By source domain of the eval set (final val_loss of equal-length runs, paired):")
            doc.bullets(items)
    controls = control_gaps(asked.groups)
    if controls:
        doc.para("RA against its controls at equal iterations (std-gated: learned temperature only; ra-norec: same gates and "
                 "bias with w_rec = 0; ra-norec against std-gated isolates the discoverability bias):")
        doc.bullets([iter_gap_sentence(c, b, gaps, asked.eq_margin) for c, b, gaps in controls])


def layer_sentence(group: ConfigGroup) -> str | None:
    profile = plots.final_gates_by_layer(group, "w_rec")
    if profile is None:
        return None
    layers = [(i, float(v)) for i, v in enumerate(profile) if math.isfinite(v)]
    values = ", ".join(f"L{i} {v:.3f}" for i, v in layers)
    return f"{group.label}: final w_rec by layer (mean over heads and seeds): {values}"


def minimum_reciprocity(doc: Doc, asked: Asked) -> None:
    """One row per reciprocity variant: its step-time ratio s beside its break-even s*."""
    doc.heading(3, "5. What is the minimum effective reciprocity?")
    variants = [g for g in candidate_groups(asked.groups) if is_variant(g.attn)]  # iso-time-only ones too
    if not variants:
        doc.para("No reciprocity variant (ra-local, ra-layers, ra-anneal, ra-gated, ...) was run; this folder cannot answer it.")
        return
    by_candidate = {c.candidate: c for c in asked.comparisons if c.baseline == BASELINE}
    rows = [variant_row(g, by_candidate.get(g.label), asked.groups) for g in variants]
    doc.table(["variant", "options", "s (step-time ratio)", "s* (break-even) [95% CI]", "criterion 1 vs sdpa", "evidence (criterion 1)"], rows)
    doc.para("A variant pays off where s < s* with intervals that do not overlap; the cheapest such variant is the minimum effective reciprocity.")


def variant_row(g: ConfigGroup, c: Comparison | None, groups: dict[str, ConfigGroup]) -> list[str]:
    v1 = c.verdict("1") if c else None
    be = c.breakeven if c else None
    ratio = "; ".join(r.text() for r in be.ratios.values()) if be and be.ratios else "n/a"
    runs = g.runs or groups[iso_time_label(g.label)].runs  # an iso-time-only variant's stand-in has none
    return [g.label, str(runs[0].config.get("attn_options") or {}), ratio, break_even_text(c),
            bold(v1.verdict) if v1 else "n/a", evidence(v1.stats) if v1 else ""]


def break_even_text(c: Comparison | None) -> str:
    """s* with its interval, or the bound a variant that never reached the target gives."""
    be = c.breakeven if c else None
    s_star = "n/a"
    if be and be.stats:
        s_star = f"{be.stats.mean:.3f}" + (f" [{be.stats.lo:.3f}, {be.stats.hi:.3f}]" if be.stats.n > 1 else " (1 seed)")
        if be.never:
            s_star += f" over {be.stats.n} seeds; {len(be.never)} never reached it; median {be.median_text() or 'n/a'}"
    elif be and be.never:
        s_star = f"< {max(be.bounds):.2f} (never within its run)"
    if c is not None and c.lengths is not None and c.lengths.measured:
        s_star += "; from run lengths: " + "; ".join(c.lengths.censored() or [c.lengths.headline()])
    return s_star
