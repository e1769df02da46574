"""Break-even from real run lengths: the candidate's equal-time loss at step ratio r is the final
loss of a run *scheduled* for round(N / r) iterations, not its N-run's curve at N / r.

A run's warm-up and cosine follow its own length, so a shorter run ends at a different loss than
the longer run's curve shows at the same iteration. Per candidate and seed the report takes the
paired gap (the baseline's final val_loss at N minus the candidate's final val_loss) of every
length that ran: the N-run (r = 1), the iso-time run (r = its measured s) and any "ladder" runs
(r = N / their scheduled iterations). It interpolates the gap linearly in r between those
points, never beyond them, and reads s*, where the gap crosses 0, and the gap at any r.
Where a seed has the N-run alone, only the N-run's curve can say anything, and that reading is
named an upper bound (see criteria.break_even).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rabench.analysis.document import Doc
from rabench.analysis.pairing import N_ROLES, pair_runs, runs_of
from rabench.analysis.runs import ISO_TIME, LADDER, ConfigGroup, iso_time_label, side_label
from rabench.stats import PairedStats, paired_stats

SAME_RATIO = 1e-3  # two runs whose r differ by less than this are one length (their gaps averaged)
GRID_STEP = 5e-3  # the gap table's rows: ratios that ran closer than this (one s on two hosts) share a row
CURVE_UPPER_BOUND = "an upper bound (read from the N-run's curve, a schedule never run)"


@dataclass
class SeedLengths:
    """One seed's paired gaps by length ratio r, and where they cross 0."""

    seed: int
    points: list[tuple[float, float]]  # (r, gap), r increasing; gap > 0: candidate lower
    runs: list[str] = field(default_factory=list)  # the candidate's runs behind the points (batch/name)

    @property
    def ratios(self) -> list[float]:
        return [r for r, _ in self.points]

    def gap_at(self, r: float) -> float:
        """The gap at r, interpolated between real lengths; nan outside them."""
        xs, ys = self.ratios, [g for _, g in self.points]
        if not xs or r < xs[0] - SAME_RATIO or r > xs[-1] + SAME_RATIO:
            return math.nan
        return float(np.interp(r, xs, ys))

    def crossing(self) -> tuple[str, float]:
        """('at', s*) where the gap first falls below 0 between two lengths; ('below', r0) when
        the shortest-r (longest) run is already behind; ('above', r_max) when every length is
        ahead or level; ('none', nan) with one length that is ahead (nothing to bracket)."""
        (r0, g0), rest = self.points[0], self.points[1:]
        if g0 < 0:
            return "below", r0
        for (ra, ga), (rb, gb) in zip(self.points, rest):
            if ga >= 0 > gb:
                return "at", ra + (rb - ra) * ga / (ga - gb)
        return ("above", self.points[-1][0]) if rest else ("none", math.nan)


@dataclass
class LengthBreakEven:
    """s* and the equal-time gap for one candidate, from the lengths that ran."""

    candidate: str
    baseline: str
    seeds: list[SeedLengths]

    @property
    def measured(self) -> list[SeedLengths]:
        """Seeds with more than one length, or whose one length already answers (behind at it)."""
        return [s for s in self.seeds if len(s.points) > 1 or s.crossing()[0] == "below"]

    def s_star_stats(self) -> PairedStats | None:
        values = [s.crossing()[1] for s in self.measured if s.crossing()[0] == "at"]
        return paired_stats(values) if values else None

    def s_star_by_seed(self) -> dict[int, float]:
        """s* of each seed whose lengths bracket it (criterion 2 reads these before any curve)."""
        return {s.seed: s.crossing()[1] for s in self.measured if s.crossing()[0] == "at"}

    def censored(self) -> list[str]:
        out = []
        for s in self.measured:
            kind, r = s.crossing()
            if kind == "below":
                out.append(f"seed {s.seed}: s* < {r:.3f} (behind already at r = {r:.3f})")
            elif kind == "above":
                out.append(f"seed {s.seed}: s* > {r:.3f} (ahead or level at every length up to r = {r:.3f})")
        return out

    def gap_stats(self, r: float) -> PairedStats | None:
        """The paired equal-time gap at step ratio r over the seeds whose lengths bracket it."""
        values = [(s.seed, s.gap_at(r)) for s in self.seeds]
        values = [(seed, g) for seed, g in values if math.isfinite(g)]
        return paired_stats([g for _, g in values], [seed for seed, _ in values]) if values else None

    def grid(self) -> list[float]:
        """Every length ratio that ran, once (r = 1 and the ladder's and iso-time runs' ratios)."""
        out: list[float] = []
        for r in sorted(r for s in self.seeds for r in s.ratios):
            if not out or r - out[-1] > GRID_STEP:
                out.append(r)
        return out

    def headline(self) -> str:
        if not self.measured:
            return (f"{self.candidate}: no seed has a run shorter than N (iso-time or ladder), so s* from run lengths "
                    f"is not measurable; the curve-based s* below is {CURVE_UPPER_BOUND}")
        st = self.s_star_stats()
        parts = []
        if st is not None:
            ci = f", 95% CI [{st.lo:.3f}, {st.hi:.3f}]" if st.n > 1 else ""
            parts.append(f"s* = {st.mean:.3f}{ci} over {st.n} seed(s) whose lengths bracket it")
        censored = self.censored()
        if censored:
            parts.append("; ".join(censored))
        n_only = len(self.seeds) - len(self.measured)
        if n_only:
            parts.append(f"{n_only} seed(s) ran at N alone and are ahead there: for them only the curve-based s* below "
                         f"({CURVE_UPPER_BOUND})")
        return (f"{self.candidate} (vs {self.baseline}), from run lengths (gap interpolated linearly in r between "
                f"runs scheduled for N / r iterations): " + "; ".join(parts))


def length_points(label: str, baseline: str, groups: dict[str, ConfigGroup]) -> LengthBreakEven | None:
    """Per seed, the paired final gap at every length the candidate `label` ran (N, iso-time,
    ladder), each paired with the baseline's N-run of its own batch and machine (iteration
    design). None without a baseline group or a pair."""
    base = groups.get(baseline)
    if base is None:
        return None
    cands = (runs_of(groups.get(label), N_ROLES) + runs_of(groups.get(iso_time_label(label)), (ISO_TIME,))
             + runs_of(groups.get(side_label(label, LADDER)), (LADDER,)))
    pairs, _ = pair_runs(cands, runs_of(base, N_ROLES))
    by_seed: dict[int, list[tuple[float, float, str]]] = {}
    for p in pairs:
        n_base, n_cand = p.base.scheduled_iters, p.cand.scheduled_iters
        if not n_base or not n_cand:
            continue
        gap = p.base.final_val_loss - p.cand.final_val_loss
        by_seed.setdefault(p.seed, []).append((n_base / n_cand, gap, p.cand.where))
    seeds = [SeedLengths(seed, _merge_lengths(points), [w for _, _, w in points]) for seed, points in sorted(by_seed.items())]
    return LengthBreakEven(label, baseline, seeds) if seeds else None


def _merge_lengths(points: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """(r, gap) sorted by r; a length that ran in several batches (the same seed twice) counts once."""
    merged: list[tuple[list[float], list[float]]] = []
    for r, gap, _ in sorted(points):
        if merged and r - merged[-1][0][-1] < SAME_RATIO:
            merged[-1][0].append(r)
            merged[-1][1].append(gap)
        else:
            merged.append(([r], [gap]))
    return [(sum(rs) / len(rs), sum(gs) / len(gs)) for rs, gs in merged]



def lengths_section(doc: Doc, found: list[LengthBreakEven],
                    plot: Callable[[list[LengthBreakEven]], Path | None]) -> None:
    """The break-even section's part that real run lengths carry: s* per candidate and the
    equal-time gap at every length ratio that ran (a table), with a plot of the gaps."""
    doc.para("**From real run lengths.** " + LENGTHS_RULE)
    doc.bullets([lb.headline() for lb in found])
    rows = []
    for lb in found:
        for r in lb.grid():
            st = lb.gap_stats(r)
            if st is not None:
                rows.append([lb.candidate, f"{r:.3f}", str(st.n), st.text()])
    if rows:
        doc.table(["candidate", "r (N / run length)", "seeds", "equal-time gap at r (baseline - candidate)"], rows)
    doc.bullets([f"{lb.candidate}, seed {s.seed}: " + ", ".join(f"r {r:.3f}: gap {g:+.4f}" for r, g in s.points)
                 + f" ({', '.join(s.runs)})" for lb in found for s in lb.seeds if len(s.points) > 1])
    doc.image(plot(found), "paired final gap (baseline - candidate) against the run's length ratio r = N / iterations, per seed")


LENGTHS_RULE = ("Per seed the paired final gap (the baseline's final val_loss at N minus the candidate's) at every "
                "length the candidate ran: N (r = 1), the iso-time run (r = its s) and any ladder runs (r = N / their "
                "iterations), each paired with the baseline's N-run of its own batch. s* is where the gap, "
                "interpolated linearly in r, crosses 0; the gap at r is read between real lengths, never beyond them. "
                "A length that ran in two batches counts once.")
