"""The figures in this folder's README answer that the report does not print itself, computed
from the committed run folders with rabench's own readers and statistics:

    PYTHONPATH=src python results/campaign/answer_figures.py

(every other figure in the answer is in report.md / report-N-*/report.md, from
`rabench report results/campaign`)."""

from __future__ import annotations

import statistics
from pathlib import Path

from rabench.analysis.criteria import first_group, iteration_gaps
from rabench.analysis.lengths import length_points
from rabench.analysis.report import analyse
from rabench.analysis.runs import load_batches
from rabench.data.regime import epochs, repeated_token_share
from rabench.stats import equivalence_text, paired_stats

HERE = Path(__file__).parent
# the controls' compiled step with their gates folded into the query projection, against sdpa's, on
# one H100 (../bench/h100-2026-12-07/: std-gated 1.001x; ra-norec 1.003x in the bench, 1.007x in a calibration)
FOLDED_STEP_RATIO = {"std-gated": (1.001, 1.001), "ra-norec": (1.003, 1.007)}
TRAIN_TOKENS = 109_452_502  # `rabench prepare` of english-mix + kernel-c (batch 1's section; no run records it)


def same_seed_sdpa_reruns() -> None:
    """sdpa trained twice with one seed and one N in different batches (different cards, sessions)."""
    finals: dict[tuple[int, int], list[tuple[str, float]]] = {}
    for batch in load_batches(HERE):
        if not batch.plan:
            continue
        for r in batch.runs:
            if r.attn == "sdpa" and r.role == "baseline" and r.judgeable:
                finals.setdefault((r.scheduled_iters, r.seed), []).append((batch.name, r.final_val_loss))
    squares, dof = 0.0, 0
    for (n, seed), runs in sorted(finals.items()):
        if len(runs) > 1:
            values = [v for _, v in runs]
            print(f"sdpa N={n} seed {seed}: " + ", ".join(f"{b} {v:.4f}" for b, v in runs) + f" (range {max(values) - min(values):.4f})")
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    print(f"same-seed sdpa reruns: pooled within-seed sd {(squares / dof) ** 0.5:.4f} over {dof} degrees of freedom")


def final_w_rec(length: str) -> None:
    """Mean final w_rec over layers and seeds of ra-triton's N-runs (initial 0.1525 in every layer)."""
    _, _, groups, _ = analyse(HERE, length)
    ra = first_group(groups, "ra-triton")
    finals, firsts = [], []
    for r in ra.judged:
        if r.gate_records:
            finals.append(statistics.fmean(r.gate_records[-1]["gates"]["w_rec"]))
            firsts.append(statistics.fmean(r.gate_records[0]["gates"]["w_rec"]))
    at_8000 = [statistics.fmean(next(m for m in r.gate_records if m["iter"] >= 8000)["gates"]["w_rec"])
               for r in ra.judged if r.gate_records and r.gate_records[-1]["iter"] > 8000]
    if at_8000:
        print(f"{length}: ra-triton w_rec at iteration 8,000 of these runs: {statistics.fmean(at_8000):.4f}")
    print(f"{length}: ra-triton w_rec, mean over layers: initial {statistics.fmean(firsts):.4f}, final "
          f"{statistics.fmean(finals):.4f} (seeds: {', '.join(f'{v:.3f}' for v in finals)})")


def phases(length: str) -> None:
    """Per-iteration gaps through training for ra-norec, std-gated and ra-triton against sdpa."""
    _, _, groups, _ = analyse(HERE, length)
    sdpa = first_group(groups, "sdpa")
    for attn in ("ra-norec", "std-gated", "ra-triton"):
        g = first_group(groups, attn)
        if g is None:
            continue
        gaps = iteration_gaps(g, sdpa, "iteration", (1 / 3, 1 / 2, 2 / 3, 1.0))
        print(f"{length} sdpa - {attn} per iteration: " + "; ".join(
            f"at {f:.2f} N {st.mean:+.4f} [{st.lo:+.4f}, {st.hi:+.4f}] ({st.n} seeds, p = {st.p_sign_flip:.3g})"
            for f, st in zip(gaps.fractions, gaps.stats) if st is not None))
        last = gaps.stats[-1]
        for m in (0.005, 0.01, 0.02):
            print(f"    at N: {equivalence_text(last, m)}")


def controls_at_folded_cost(length: str = "N=8000") -> None:
    """An estimate, not a run: each control's equal-time gap at its folded step cost. The control
    would train round(N / s) iterations; a run scheduled shorter ends higher, by a slope this
    folder measures only for ra-triton (its N-run and equal-time run per seed: the paired gap's fall
    per unit of r = N / iterations, linear in r as lengths.py reads it). The estimate takes that
    slope as the control's too and subtracts slope x (s - 1) from each seed's gap at N."""
    _, _, groups, _ = analyse(HERE, length)
    ra = length_points("ra-triton", "sdpa", groups)
    slopes = [(s.points[0][1] - s.points[-1][1]) / (s.points[-1][0] - s.points[0][0])
              for s in ra.seeds if len(s.points) > 1 and s.points[0][0] == 1.0]
    slope = paired_stats(slopes)
    print(f"{length}: ra-triton's paired gap falls {slope.mean:.3f} [{slope.lo:.3f}, {slope.hi:.3f}] per unit of r "
          f"({slope.n} seeds)")
    for attn, (s_low, s_high) in FOLDED_STEP_RATIO.items():
        ctrl = length_points(attn, "sdpa", groups)
        at_n = [s.points[0][1] for s in ctrl.seeds if s.points[0][0] == 1.0]  # each seed's gap at N
        for s_c in sorted({s_low, s_high}):
            for name, k in (("slope", slope.mean), ("slope's upper 95% bound", slope.hi)):
                est = paired_stats([g - k * (s_c - 1) for g in at_n])
                print(f"    {attn} at s = {s_c:.3f}, {name}: sdpa - {attn} at equal time (estimate) {est.text()}")


def regime() -> None:
    for n in (8000, 20000):
        x = epochs(n * 8192, TRAIN_TOKENS)
        print(f"N={n}: {n * 8192 / 1e6:.1f}M tokens, {x:.2f} epochs, repeated-token share {repeated_token_share(x):.2f}")


if __name__ == "__main__":
    regime()
    same_seed_sdpa_reruns()
    for length in ("N=8000", "N=20000"):
        final_w_rec(length)
        phases(length)
    controls_at_folded_cost()
