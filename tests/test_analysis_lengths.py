"""Break-even from real run lengths (analysis/lengths.py) and pairs that mean what they say,
on hand-made run folders whose final losses are chosen so that s* is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_analysis import SIX, comparison, linear, write_calibration, write_run

from rabench.analysis import write_report
from rabench.analysis.report import analyse
from rabench.stats import PASS, holm

N = 1000
SLOPE = 0.4  # the candidate's final loss rises 0.4 nats per unit of r = N / its run length


def candidate_final(a: float, iters: int) -> float:
    """Final loss of a run of `iters` iterations: 4.0 - a at N, so the paired gap against sdpa's
    4.0 is a - SLOPE * (r - 1), linear in the real r = N / iters: s* = 1 + a / SLOPE exactly."""
    return 4.0 - a + SLOPE * (N / iters - 1)


def write_candidate(root: Path, attn: str, seed: int, a: float, iters: int, role: str, **kw) -> None:
    end = candidate_final(a, iters)
    name = {"ladder": f"{attn}-ladder{N / iters:.2f}-s{seed}", "iso-time": f"{attn}-isotime-s{seed}"}.get(role, f"{attn}-s{seed}")
    every = max(d for d in range(1, iters // 4 + 1) if iters % d == 0)  # the last evaluation at the run's end
    run = write_run(root, attn, seed, linear(5.0, (5.0 - end) / iters), iters, 10.5, role, name=name, eval_every=every, **kw)
    if role == "ladder":
        config = json.loads((run / "config.json").read_text())
        config["labels"]["ladder_ratio"] = round(N / iters, 2)
        (run / "config.json").write_text(json.dumps(config))


def ladder_suite(root: Path, offsets: dict[int, float], attn: str = "ra-norec") -> None:
    """sdpa at N ending at 4.0; the candidate at N, at N/1.1 (ladder) and at N/1.2 (iso-time)."""
    root.mkdir(parents=True, exist_ok=True)
    write_calibration(root, {attn: 1.2})
    for seed, a in offsets.items():
        write_run(root, "sdpa", seed, linear(5.0, 1 / N), N, 10.0, "baseline")
        write_candidate(root, attn, seed, a, N, "iso-iter")
        write_candidate(root, attn, seed, a, round(N / 1.1), "ladder")
        write_candidate(root, attn, seed, a, round(N / 1.2), "iso-time")


def test_s_star_from_run_lengths_is_read_between_real_lengths(tmp_path):
    offsets = {seed: 0.02 + 0.004 * (seed - 2) for seed in SIX}  # s* = 1 + a / 0.4: 1.03 ... 1.08
    ladder_suite(tmp_path, offsets)
    comp = comparison(tmp_path, candidate="ra-norec")
    lengths = comp.lengths
    expected = [1 + a / SLOPE for a in offsets.values()]
    assert [s.crossing() for s in lengths.seeds] == [("at", pytest.approx(e)) for e in expected]
    st = lengths.s_star_stats()
    assert st.n == 6 and st.mean == pytest.approx(sum(expected) / 6)
    # the gap at the iso-time length r = 1000 / 833 is the equal-time gap criterion 1 judges
    r = N / round(N / 1.2)
    gap = lengths.gap_stats(r)
    assert gap.mean == pytest.approx(sum(a - SLOPE * (r - 1) for a in offsets.values()) / 6)
    assert lengths.gap_stats(1.3) is None  # beyond every run: never extrapolated
    # criterion 2 takes each seed's time ratio s / s* from the run lengths, not from the N-run's curve
    c2 = comp.verdict("2-break-even")
    assert list(c2.stats.values) == pytest.approx([1 - 1.2 / e for e in expected])
    assert "6 seed(s) from run lengths (s / s*), 0 from the N-runs' curves" in c2.numbers
    groups = analyse(tmp_path)[2]
    assert "ra-norec [ladder]" in groups and all(r.role != "ladder" for r in groups["ra-norec"].runs)


def test_a_seed_behind_at_n_or_ahead_at_every_length_is_censored_not_interpolated(tmp_path):
    ladder_suite(tmp_path, {0: -0.01, 1: 0.1})  # seed 0 behind already at N; seed 1 ahead up to r = 1.2
    lengths = comparison(tmp_path, candidate="ra-norec").lengths
    assert lengths.s_star_stats() is None
    assert lengths.censored() == ["seed 0: s* < 1.000 (behind already at r = 1.000)",
                                  f"seed 1: s* > {N / round(N / 1.2):.3f} (ahead or level at every length up to r = {N / round(N / 1.2):.3f})"]


def test_the_report_prints_both_readings_and_names_the_curve_one_an_upper_bound(tmp_path):
    ladder_suite(tmp_path, {seed: 0.02 for seed in SIX})
    for seed in SIX:  # std-gated ran at N only: its s* can come from its curve alone
        write_run(tmp_path, "std-gated", seed, linear(5.0, 1.01 / N), N, 10.3, "iso-iter")
    md = write_report(tmp_path)[0].read_text()
    assert "**From real run lengths.**" in md and "ra-norec (vs sdpa), from run lengths" in md and "s* = 1.050" in md
    assert "std-gated: no seed has a run shorter than N" in md
    assert "an upper bound (read from the N-run's curve, a schedule never run)" in md
    assert (tmp_path / "break_even_lengths.png").is_file()


def test_a_seed_in_two_batches_counts_once_and_pairs_stay_on_their_machine(tmp_path):
    camp = tmp_path / "campaign"
    for batch in ("b1", "b2"):
        root = camp / batch
        root.mkdir(parents=True)
        (root / "suite.json").write_text(json.dumps({"max_iters": N}))
        write_calibration(root, {"ra-triton": 1.2})
    seeds = {"b1": (0, 1, 2, 3), "b2": (3, 4, 5)}  # seed 3 trained in both batches
    for batch, batch_seeds in seeds.items():
        for seed in batch_seeds:
            write_run(camp / batch, "sdpa", seed, linear(5.0, 1 / N), N, 10.0, "baseline")
            write_run(camp / batch, "ra-triton", seed, linear(5.0, 1.3 / N), round(N / 1.2), 12.0, "iso-time",
                      eval_every=round(N / 1.2) // 5)
    c1 = comparison(camp).verdict("1")
    assert c1.stats.n == 6 and c1.verdict == PASS  # 7 pairs, 6 distinct seeds
    assert any("seed(s) 3 paired in more than one batch" in n for n in comparison(camp).notes)
    # with machine identities recorded, a baseline on another machine is never a partner
    for run in (camp / "b2").glob("*-s4"):
        config = json.loads((run / "config.json").read_text())
        config["machine_id"] = "m-sdpa" if run.name.startswith("sdpa") else "m-other"
        (run / "config.json").write_text(json.dumps(config))
    comp = comparison(camp)
    assert comp.verdict("1").stats.n == 5
    assert any("ra-triton-isotime-s4: no finished baseline run with seed 4 in the same batch on the same card and machine" in n
               for n in comp.notes)


def test_the_verdict_table_gives_holm_beside_the_raw_p_and_tost_uses_the_plans_margin(tmp_path):
    from test_analysis import iteration_suite

    # RA 0.004 nats lower at N in every seed (seeds differ slightly): PASS on criterion 3, p = 2/64
    iteration_suite(tmp_path, SIX, lambda seed: (1.004 + 0.0002 * seed) / 1000, s=1.0)
    comp = comparison(tmp_path)
    md = write_report(tmp_path)[0].read_text()
    family = [v for c in analyse(tmp_path)[3] for v in c.verdicts if v.p is not None]  # the verdict table's cells
    assert f"Holm's adjusted p over the family this table declares: {len(family)} tests" in md
    c3 = next(v for v in family if v.key == "3")
    assert c3.p == pytest.approx(2 / 64)
    assert c3.p_holm == pytest.approx(holm([v.p for v in family])[family.index(c3)]) and c3.p_holm > c3.p
    assert f"(p = 0.031, Holm {c3.p_holm:.2g})" in md
    assert "equivalence within ±0.01 nats not shown" not in comp.verdict("3").numbers  # 0.004 +- tiny: within 0.01
    assert "equivalent within ±0.01 nats (TOST p = " in comp.verdict("3").numbers
    (tmp_path / "suite.json").write_text(json.dumps({"equivalence_margin": 0.002}))
    assert "equivalence within ±0.002 nats not shown" in comparison(tmp_path).verdict("3").numbers


def test_a_calibration_kept_from_another_machine_is_named(tmp_path):
    from test_analysis import iteration_suite

    iteration_suite(tmp_path, (0, 1), lambda seed: 1.1 / 1000, s=1.2)
    (tmp_path / "suite.json").write_text(json.dumps({"calibration_reuse": [{
        "flag": "--reuse-calibration", "at": "2026-12-06T08:00:00Z", "calibration_measured_at": "2026-12-05T10:00:00Z",
        "differences": ["machine_id: aaa -> bbb"]}]}))
    md = write_report(tmp_path)[0].read_text()
    assert ("its calibration (measured 2026-12-05T10:00:00Z) was kept with `--reuse-calibration` on 2026-12-06T08:00:00Z "
            "across machine_id: aaa -> bbb") in md
    assert "machines (machine_id: GPU UUIDs + boot id): 0 recorded; 6 run(s) record none" in md
