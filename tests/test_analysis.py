"""The analysis layer on hand-made run folders: statistics, decision rules, pairing and the report."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Callable

import pytest

from rabench.analysis import summarize, write_report
from rabench.analysis.criteria import judge_all
from rabench.analysis.report import analyse
from rabench.analysis.runs import RA_ROLES, group_by_config, load_batches, load_runs, registry_role
from rabench.stats import (
    FAIL,
    INCONCLUSIVE,
    NO_VERDICT,
    ONE_SEED_NOTE,
    PASS,
    TOO_FEW,
    decide,
    paired_stats,
    sign_flip_p,
    t_quantile,
    t_two_sided_p,
)
from rabench.errors import RabenchError

Curve = Callable[[float], float]
H100 = ("NVIDIA H100 80GB HBM3", "host-a")
H200 = ("NVIDIA H200", "host-b")
SIX = (0, 1, 2, 3, 4, 5)  # the fewest seeds whose exact sign-flip p can support a verdict


def write_run(
    root: Path, attn: str, seed: int, loss: Curve, iters: int, ms: float, role: str, *,
    name: str | None = None, eval_every: int = 100, card: tuple[str, str] = H100, finished: bool = True,
    time_budget_s: float | None = None, gates: bool = False, last_iter_logged: int | None = None,
    torn: bool = False, sources: bool = False,
) -> Path:
    """A run folder (the layout rundir.RunFolder reads) whose val_loss follows loss(iter)."""
    run = root / (name or (f"{attn}-isotime-s{seed}" if role == "iso-time" else f"{attn}-s{seed}"))
    run.mkdir(parents=True)
    config = {
        "attn": attn, "attn_options": {}, "preset": "tiny", "seed": seed, "batch_size": 2, "seq_len": 64,
        "grad_accum": 1, "lr": 6e-4, "compile": False, "tokens_per_iter": 128, "until_plateau": False,
        "max_iters": None if time_budget_s else iters, "time_budget_s": time_budget_s,
        "gpu_name": card[0], "host": card[1], "device": "cuda",
    }
    if role != "time":
        config["labels"] = {"role": role, "step_ratio": None, "baseline": "sdpa", "suite": root.name}
    (run / "config.json").write_text(json.dumps(config))
    last = iters if last_iter_logged is None else last_iter_logged
    lines = []
    for it in sorted(set(range(0, last + 1, eval_every)) | {last}):  # the trainer evaluates at its last iteration too
        rec = {"iter": it, "tokens": it * 128, "train_time_s": it * ms / 1000, "wall_time_s": it * ms / 900,
               "train_loss": loss(it) + 0.05, "lr": 6e-4, "ms_per_iter": ms, "tokens_per_s": 128e3 / ms,
               "peak_mem_gb": 1.0, "val_loss": loss(it), "val_se": 0.01}
        if sources:
            rec["val_by_source"] = {"english": loss(it) + 0.1, "c": loss(it) - 0.1}
        if gates:
            frac = it / iters
            rec["gates"] = {"w_std": [0.755 - 0.2 * frac, 0.755], "w_rec": [0.152, 0.152 + 0.3 * frac], "w_disc": [0.092] * 2}
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"iter": 99999, "val_lo'
    (run / "metrics.jsonl").write_text(text)
    if finished:
        (run / "summary.json").write_text(json.dumps({
            "status": "finished", "stop_reason": "time budget" if time_budget_s else "max iters", "iters": last,
            "tokens": last * 128, "train_time_s": last * ms / 1000, "wall_time_s": last * ms / 900,
            "final_val_loss": loss(last), "best_val_loss": loss(last), "ms_per_iter": ms, "tokens_per_s": 128e3 / ms,
            "peak_mem_gb": 1.0,
        }))
    return run


def write_calibration(root: Path, ratios: dict[str, float], card: tuple[str, str] = H100, floor: float | None = None,
                      half_width: float = 0.02) -> None:
    configs = {"sdpa": {"ms_per_iter": 10.0, "ms_ci95": [9.9, 10.1], "ratio": 1.0, "ratio_ci95": [1.0, 1.0]}}
    for attn, s in ratios.items():
        configs[attn] = {"ms_per_iter": 10 * s, "ms_ci95": [9.9 * s, 10.1 * s], "ratio": s, "ratio_ci95": [s - half_width, s + half_width]}
        if floor is not None:
            configs[attn]["gpu_floor_ratio"] = floor
    (root / "calibration.json").write_text(json.dumps({"card": card[0], "host": card[1], "compiled": True, "baseline": "sdpa", "configs": configs}))


def linear(start: float, per_iter: float) -> Curve:
    return lambda it: start - per_iter * it


def iteration_suite(root: Path, seeds, cand_rate: Callable[[int], float], s: float, n: int = 1000,
                    card: tuple[str, str] = H100, cand: str = "ra-triton") -> None:
    """Iteration design: sdpa and the candidate for N iterations, the candidate also for
    round(N/s). sdpa falls 1.0 over N (to 4.0); the candidate by cand_rate(seed) per iteration."""
    root.mkdir(parents=True, exist_ok=True)
    write_calibration(root, {cand: s}, card)
    for seed in seeds:
        write_run(root, "sdpa", seed, linear(5.0, 1 / n), n, 10.0, "baseline", card=card)
        rate = cand_rate(seed)
        write_run(root, cand, seed, linear(5.0, rate), n, 10.0 * s, "iso-iter", card=card)
        write_run(root, cand, seed, linear(5.0, rate * n / round(n / s)), round(n / s), 10.0 * s, "iso-time", card=card, eval_every=round(n / s) // 5)


def comparison(folder: Path, candidate: str = "ra-triton", baseline: str = "sdpa"):
    batches = load_batches(folder)
    groups = group_by_config([r for b in batches for r in b.runs])
    comps = judge_all(groups, {b.name: b for b in batches})
    return next(c for c in comps if c.candidate == candidate and c.baseline == baseline)


def verdicts(folder: Path, **kw) -> dict[str, str]:
    return {v.key: v.verdict for v in comparison(folder, **kw).verdicts}


# ---------------------------------------------------------------- statistics


def test_ra_side_comes_from_the_registry_family():
    # ra-norec has no reciprocal term: a control, though its name starts with ra-
    def is_ra(attn: str) -> bool:
        return registry_role(attn) in RA_ROLES

    assert is_ra("ra-triton") and is_ra("ra-local")
    assert not is_ra("ra-norec") and not is_ra("std-gated") and not is_ra("sdpa")
    assert is_ra("ra-retired-variant")  # a name no longer registered falls back to the naming convention


def test_break_even_median_counts_the_seeds_that_never_reached_the_target():
    from rabench.analysis.criteria import BreakEven

    def be(values, bounds):
        return BreakEven(values, [f"s{i}" for i in range(len(bounds))], bounds, [], None, {}, "")

    assert be([1.087, 1.012, 1.010], [1.0] * 4).median_text() == "< 1.00"  # 4 of 7 never: the median is one of them
    assert be([1.1, 1.2, 1.3], [1.0]).median_text() == "1.15"  # the never-seed is the lowest of four
    assert be([1.2], [1.0]).median_text() == "< 1.10"  # between a bound and a value
    assert be([1.05], [1.2]).median_text() is None  # a bound above a reached value: order unknown
    assert be([1.1, 1.3], []).median_text() == "1.20"


def test_t_distribution_and_quantiles_match_tables():
    assert t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-5)
    assert t_quantile(0.95, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-3)
    assert t_quantile(0.95, 5) == pytest.approx(2.5706, abs=1e-3)
    assert t_quantile(0.95, 30) == pytest.approx(2.0423, abs=1e-3)


def test_sign_flip_p_is_exact():
    assert sign_flip_p([0.1] * 6) == (pytest.approx(2 / 64), True)
    assert sign_flip_p([0.3, 0.1]) == (pytest.approx(0.5), True)
    assert sign_flip_p([0.2, 0.1, 0.1, 0.1, 0.3])[0] == pytest.approx(2 / 32)
    margins = [0.5, -0.1, 0.2, 0.3]
    brute = sum(abs(sum(s * m for s, m in zip(signs, margins))) >= sum(margins) - 1e-12
                for signs in itertools.product((1, -1), repeat=4)) / 16
    assert sign_flip_p(margins)[0] == pytest.approx(brute) == pytest.approx(4 / 16)


def test_interval_and_decision_rule():
    st = paired_stats([0.10, 0.12, 0.14])
    half = 4.3027 * 0.02 / math.sqrt(3)
    assert (st.lo, st.hi) == (pytest.approx(0.12 - half, abs=1e-4), pytest.approx(0.12 + half, abs=1e-4))
    assert decide(st) == TOO_FEW  # the interval excludes 0, but 3 seeds agree in sign by chance 1 time in 4
    six = paired_stats([0.10, 0.12, 0.14, 0.11, 0.13, 0.12])
    assert decide(six) == PASS  # p = 2/64
    assert decide(six, margin=0.2) == FAIL  # the whole interval lies below a margin fixed before the runs
    assert decide(paired_stats([-x for x in six.values])) == FAIL
    assert decide(paired_stats([0.1, -0.05, 0.02, 0.03, -0.04, 0.01])) == INCONCLUSIVE
    assert decide(paired_stats([0.5])) == NO_VERDICT  # one seed: never a verdict, however large
    assert decide(None) == NO_VERDICT


# ---------------------------------------------------------------- the iteration design


def test_clear_win_passes_and_break_even_is_known(tmp_path):
    # sdpa reaches 4.0 at N = 1000; RA falls at 1/500, 1/480, 1/520 per iteration: reaches 4.0 at 500, 480, 520
    rates = {0: 1 / 500, 1: 1 / 480, 2: 1 / 520, 3: 1 / 500, 4: 1 / 490, 5: 1 / 510}
    iteration_suite(tmp_path, SIX, rates.__getitem__, s=1.25)
    comp = comparison(tmp_path)
    v = {x.key: x for x in comp.verdicts}
    assert v["1"].verdict == PASS and v["1"].stats.n == 6  # iso-time runs (800 iters) end below 4.0
    assert v["2-break-even"].verdict == PASS  # time ratio 1.25 * 500/1000 etc. < 1
    be = comp.breakeven
    expected = [1000 / 500, 1000 / 480, 1000 / 520, 1000 / 500, 1000 / 490, 1000 / 510]
    assert sorted(be.values) == pytest.approx(sorted(expected))
    assert be.stats.mean == pytest.approx(sum(expected) / 6)
    headline = be.headline("ra-triton")
    assert f"would need to be <= {sum(expected) / 6:.2f}" in headline and "it is" in headline and "1.25x (calibrated, CI [1.23, 1.27])" in headline


def test_clear_loss_fails(tmp_path):
    # RA slower per iteration (never reaches 4.0 within N) and 1.5x slower per step
    iteration_suite(tmp_path, SIX, lambda seed: 0.8 / 1000 - seed * 1e-6, s=1.5)
    v = verdicts(tmp_path)
    assert v["1"] == FAIL and v["3"] == FAIL
    assert v["2-break-even"] == FAIL  # margins are upper bounds here, enough for FAIL
    be = comparison(tmp_path).breakeven
    assert be.values == [] and len(be.never) == 6
    assert "s* < 1.00" in be.headline("ra-triton") and "no slowdown breaks even" in be.headline("ra-triton")


def test_literal_and_break_even_versions_of_criterion_2_differ(tmp_path):
    # RA reaches sdpa's final loss at 500 of 1000 iterations, s = 1.5: time ratio 0.75 < 1 but > 1/s = 0.667
    iteration_suite(tmp_path, SIX, lambda seed: 1 / (500 + 10 * seed), s=1.5)
    v = verdicts(tmp_path)
    assert v["2-break-even"] == PASS
    assert v["2-literal"] == FAIL


def test_overlapping_seeds_are_inconclusive(tmp_path):
    # seed-to-seed spread larger than the mean gap: RA lower in one seed, higher in the others
    iteration_suite(tmp_path, SIX, lambda seed: (1.3, 0.9, 0.95, 1.2, 0.92, 1.1)[seed] / 1000, s=1.0)
    v = verdicts(tmp_path)
    assert v["1"] == INCONCLUSIVE and v["3"] == INCONCLUSIVE


def test_one_seed_gives_no_verdict_and_says_why(tmp_path):
    iteration_suite(tmp_path, (0,), lambda seed: 3 / 1000, s=1.1)
    assert set(verdicts(tmp_path).values()) == {NO_VERDICT}
    md = write_report(tmp_path)[0].read_text()
    assert ONE_SEED_NOTE in md
    assert "**PASS**" not in md and "**FAIL**" not in md and "**INCONCLUSIVE**" not in md


def test_margin_fixed_in_the_plan_turns_a_small_win_into_fail(tmp_path):
    iteration_suite(tmp_path, SIX, lambda seed: (1.05 + 0.002 * seed) / 1000, s=1.0)
    assert verdicts(tmp_path)["3"] == PASS  # ~0.05 lower at N
    (tmp_path / "suite.json").write_text(json.dumps({"margin": 0.2}))
    assert verdicts(tmp_path)["3"] == FAIL  # ... but well short of the 0.2 the plan asked for


def test_iteration_zero_only_and_torn_runs_are_never_judged(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1e-3), 1000, 10.0, "baseline")
    # an interrupted RA run that only has its untrained eval, and one whose last line is torn
    write_run(tmp_path, "ra-triton", 0, linear(5.0, 0.5), 1000, 12.0, "iso-iter", last_iter_logged=0, finished=False)
    write_run(tmp_path, "ra-triton", 1, linear(5.0, 0.5), 1000, 12.0, "iso-iter", last_iter_logged=300, finished=False, torn=True)
    # and a folder that claims to be finished but holds only the iteration-0 eval
    write_run(tmp_path, "ra-local", 0, linear(5.0, 0.5), 1000, 11.0, "iso-iter", last_iter_logged=0)
    write_run(tmp_path, "ra-local", 1, linear(5.0, 0.5), 1000, 11.0, "iso-iter", last_iter_logged=0)
    runs = {r.name: r for r in load_runs(tmp_path)}
    assert runs["ra-triton-s1"].metrics[-1]["iter"] == 300  # the torn line is dropped by RunFolder
    assert not any(runs[n].judgeable for n in ("ra-triton-s0", "ra-triton-s1", "ra-local-s0", "ra-local-s1"))
    for cand in ("ra-triton", "ra-local"):
        comp = comparison(tmp_path, candidate=cand)
        assert {v.verdict for v in comp.verdicts} == {NO_VERDICT}
        assert all(v.stats is None for v in comp.verdicts)
    md = write_report(tmp_path)[0].read_text()
    assert "`ra-triton-s0`: **partial**" in md and "`ra-triton-s1`: **partial**" in md
    assert "ra-local-s0`: finished but has no evaluation after iteration 0" in md


def test_a_finished_run_whose_metrics_were_cut_short_is_set_aside_and_named(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1e-3), 1000, 10.0, "baseline")
        write_run(tmp_path, "ra-triton", seed, linear(5.0, 1.1e-3), 1000, 12.0, "iso-iter")
    metrics = tmp_path / "ra-triton-s1" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-37])  # the final evaluation's line torn: read_records drops it uncounted
    runs = {r.name: r for r in load_runs(tmp_path)}
    cut = runs["ra-triton-s1"]
    assert cut.finished and cut.final_iter == 900 and cut.skipped_records == 0
    assert not cut.judgeable and "ends before its summary's final evaluation" in cut.why_not_judged
    assert runs["ra-triton-s0"].judgeable and runs["ra-triton-s0"].summary_mismatch is None
    assert any(n.startswith("ra-triton-s1: not judged, metrics.jsonl ends before") for n in comparison(tmp_path).notes)
    md = write_report(tmp_path)[0].read_text()
    assert "1 finished run(s) whose metrics.jsonl disagrees with their summary.json (ra-triton-s1)" in md
    assert "`ra-triton-s1`: finished, but metrics.jsonl ends before" in md


def test_a_variant_with_iso_time_runs_alone_is_judged_at_equal_time(tmp_path):
    # isoiter_attns = []: ra-local has no N-iteration runs, only round(N/s) ones (question 5's batch)
    n, s = 1000, 1.25
    write_calibration(tmp_path, {"ra-local": s})
    for seed in SIX:
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1 / n), n, 10.0, "baseline")
        m = round(n / s)  # 800 iterations ending at 4.2 > sdpa's 4.0: worse at equal time
        write_run(tmp_path, "ra-local", seed, linear(5.0, 1 / n), m, 10.0 * s, "iso-time", eval_every=m // 5)
    comp = comparison(tmp_path, candidate="ra-local")
    assert comp.verdict("1").verdict == FAIL and comp.verdict("1").stats.n == 6
    assert comp.verdict("3").verdict == NO_VERDICT  # nothing at N iterations to pair
    assert [round(r.s, 2) for r in comp.breakeven.ratios.values()] == [1.25]  # s from the iso-time pairs
    md = write_report(tmp_path)[0].read_text()
    q5 = md.split("### 5. What is the minimum effective reciprocity?")[1]
    assert "| ra-local |" in q5 and "**FAIL**" in q5 and "1.25" in q5


def test_controls_are_compared_with_ra_and_with_each_other(tmp_path):
    from rabench.analysis.criteria import control_gaps

    for seed in (0, 1, 2):
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1.0e-3), 1000, 10.0, "baseline")
        write_run(tmp_path, "std-gated", seed, linear(5.0, 1.01e-3), 1000, 10.5, "iso-iter")
        write_run(tmp_path, "ra-norec", seed, linear(5.0, 1.02e-3 + seed * 1e-6), 1000, 11.0, "iso-iter")
        write_run(tmp_path, "ra-triton", seed, linear(5.0, 1.0e-3), 1000, 11.6, "iso-iter")
    groups = group_by_config([r for b in load_batches(tmp_path) for r in b.runs])
    gaps = {(cand, control): g for cand, control, g in control_gaps(groups)}
    assert set(gaps) == {("ra-triton", "std-gated"), ("ra-triton", "ra-norec"), ("ra-norec", "std-gated")}
    last = gaps[("ra-norec", "std-gated")].stats[-1]  # the bias alone: ra-norec ends 0.01 lower
    assert last.n == 3 and last.mean == pytest.approx(0.011, abs=2e-3)


def test_pairs_form_within_one_batch_and_card_and_pool_across_batches(tmp_path):
    camp = tmp_path / "campaign"
    iteration_suite(camp / "batch-a", (0, 1, 2), lambda seed: 2 / 1000, s=1.2, card=H100)
    iteration_suite(camp / "batch-b", (3, 4, 5), lambda seed: 2.2 / 1000, s=1.4, card=H200)
    # a stray candidate on another card inside batch-a: its seed has an sdpa run there, but not on its card
    write_run(camp / "batch-a", "ra-triton", 7, linear(5.0, 1.0), 1000, 10.0, "iso-iter", card=H200)
    write_run(camp / "batch-a", "sdpa", 7, linear(5.0, 1e-3), 1000, 10.0, "baseline", card=H100)
    comp = comparison(camp)
    c1 = comp.verdict("1")
    assert c1.stats.n == 6  # 3 + 3 pairs pooled, never cross-paired between batches
    assert c1.stats.p_sign_flip == pytest.approx(2 / 64)
    assert c1.verdict == PASS
    assert any("pooled across 2 batch/card units" in n for n in comp.notes)
    assert any("ra-triton-s7: no finished baseline run with seed 7 in the same batch on the same card" in n for n in comp.notes)
    assert any("pairs cross machines or cannot be shown to share one" in n for n in comp.notes)  # no machine_id recorded
    ratios = comp.breakeven.ratios
    assert len(ratios) == 2  # s per card, never mixed
    assert {round(r.s, 2) for r in ratios.values()} == {1.2, 1.4}
    # criterion 2 uses each batch's own s: break-even time ratios 1.2 * 0.5 and 1.4 * 1/2.2
    assert comp.verdict("2-break-even").verdict == PASS
    md = write_report(camp)[0].read_text()
    assert "batches (suite folders): 2" in md and "NVIDIA H200 @ host-b" in md
    assert "Step-time calibration (per batch and card" in md
    assert "**PASS** †" in md and "holds for runs of this length only" in md  # sdpa still falling at its end
    # ms/iter per card, never averaged across cards
    assert "| ra-triton | iso-iter | NVIDIA H100 80GB HBM3 @ host-a |" in md and "| ra-triton | iso-iter | NVIDIA H200 @ host-b |" in md


def _set_source_hash(run: Path, value: str) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"source_hash": value}))


def test_report_names_each_batch_code_and_cautions_where_a_batch_mixes_versions(tmp_path):
    camp = tmp_path / "campaign"
    iteration_suite(camp / "batch-a", (0, 1), lambda seed: 2 / 1000, s=1.2)
    iteration_suite(camp / "batch-b", (0, 1), lambda seed: 2 / 1000, s=1.2)
    iteration_suite(camp / "batch-c", (0, 1), lambda seed: 2 / 1000, s=1.2)  # from before runs recorded one
    for run in (camp / "batch-a").iterdir():
        if run.is_dir():
            _set_source_hash(run, "aaaaaaaaaaaa")
    for run in (camp / "batch-b").iterdir():
        if run.is_dir():
            _set_source_hash(run, "bbbbbbbbbbbb" if run.name.startswith("sdpa") else "cccccccccccc")
    md = write_report(camp)[0].read_text()
    assert ("code (hash of rabench's Python sources): `batch-a` aaaaaaaaaaaa; `batch-b` bbbbbbbbbbbb, "
            "cccccccccccc; `batch-c` not recorded") in md
    cautions = md[md.index("What these runs cannot carry"):]
    assert ("`batch-b` was made by 2 versions of the code (bbbbbbbbbbbb, cccccccccccc): runs by bbbbbbbbbbbb "
            "(2 runs), cccccccccccc (4 runs), so the runs of seeds 0, 1 mix versions\n") in cautions
    for run in (camp / "batch-b").iterdir():  # seed by seed, one version each: no pair mixes them
        if run.is_dir():
            _set_source_hash(run, "bbbbbbbbbbbb" if run.name.endswith("s0") else "cccccccccccc")
    cautions = write_report(camp)[0].read_text().split("What these runs cannot carry")[1]
    assert ("runs by bbbbbbbbbbbb (3 runs), cccccccccccc (3 runs), each seed's runs by one of them (no pair mixes "
            "versions)") in cautions
    calibration = json.loads((camp / "batch-a" / "calibration.json").read_text())
    (camp / "batch-a" / "calibration.json").write_text(json.dumps(calibration | {"source_hash": "dddddddddddd"}))
    cautions = write_report(camp)[0].read_text().split("What these runs cannot carry")[1]
    assert ("`batch-a` was made by 2 versions of the code (aaaaaaaaaaaa, dddddddddddd): runs by aaaaaaaaaaaa "
            "(6 runs); its iso-time runs were sized by the calibration of dddddddddddd, other code than trained them"
            ) in cautions
    assert "`batch-a` was made by" not in md and "`batch-c` was made by" not in md
    assert "Caution: `batch-b` was made by 2 versions" in summarize(camp)


def test_runs_no_suite_made_are_set_aside_beside_suite_batches(tmp_path):
    # a campaign folder: one suite batch, and beside it a scaling test's plain runs (other budgets)
    camp = tmp_path / "campaign"
    iteration_suite(camp / "batch-1", (0, 1, 2), lambda seed: 2 / 1000, s=1.2)
    (camp / "batch-1" / "suite.json").write_text(json.dumps({"design": "iso"}))
    for seed in (0, 1, 2):
        write_run(camp / "scaling", "sdpa", seed, linear(9.0, 1e-3), 100, 10.0, "baseline")
        write_run(camp / "scaling", "ra-triton", seed, linear(9.0, 5e-3), 100, 12.0, "iso-iter")
    batches, aside, _, comparisons = analyse(camp)
    assert [b.name for b in batches] == ["batch-1"] and [b.name for b in aside] == ["scaling"]
    comp = next(c for c in comparisons if c.candidate == "ra-triton" and c.baseline == "sdpa" and c.verdicts)
    assert comp.verdict("1").stats.n == 3  # the scaling runs are not pooled in
    md = write_report(camp)[0].read_text()
    assert "`scaling/` (6 runs): not made by `rabench suite`" in md
    # the same plain runs on their own are judged as before
    assert analyse(camp / "scaling")[0][0].runs


def test_batches_of_different_lengths_are_reported_apart_never_pooled(tmp_path):
    camp = tmp_path / "campaign"
    # the main length: RA a little ahead; the longer horizon: RA behind (so pooling would blur both)
    iteration_suite(camp / "batch-1", (0, 1, 2), lambda seed: 1.2 / 1000, s=1.1, n=1000)
    iteration_suite(camp / "horizon-1", (0, 1, 2), lambda seed: 0.8 / 2500, s=1.1, n=2500)
    for name, n in (("batch-1", 1000), ("horizon-1", 2500)):
        (camp / name / "suite.json").write_text(json.dumps({"design": "iso", "max_iters": n}))
    from rabench.analysis.report import analyse_by_length

    assert list(analyse_by_length(camp)) == ["N=1000", "N=2500"]
    short, long_ = (next(c for c in analyse(camp, h)[3] if c.candidate == "ra-triton") for h in ("N=1000", "N=2500"))
    assert short.verdict("3").stats.n == 3 and long_.verdict("3").stats.n == 3  # never 6 pooled pairs
    assert short.verdict("3").stats.mean > 0 > long_.verdict("3").stats.mean
    (camp / "val_loss_vs_time.png").write_bytes(b"a plot from a report before the horizon came")
    (camp / "gates_ra-triton.png").write_bytes(b"the same")
    (camp / "my-notes.png").write_bytes(b"not the report's")
    md, _ = write_report(camp)
    top = md.read_text()
    # the single-length report's plots went (the top page shows none); other files stay
    assert not (camp / "val_loss_vs_time.png").exists() and not (camp / "gates_ra-triton.png").exists()
    assert (camp / "my-notes.png").exists()
    assert "[report-N-1000/report.md](report-N-1000/report.md)" in top and "never pooled" in top
    assert '<a href="report-N-1000/report.html">html</a>' in (camp / "report.html").read_text()
    assert top.count("| ra-triton | sdpa |") == 2  # one headline row per length
    assert (camp / "report-N-2500" / "report.md").is_file() and (camp / "report-N-2500" / "val_loss_vs_time.png").is_file()
    assert "(N=2500)" in (camp / "report-N-2500" / "report.md").read_text().splitlines()[0]
    assert summarize(camp).count("[N=1000] ra-triton vs sdpa") == 1
    assert "Runs that became unstable" not in top
    write_run(camp / "horizon-1", "std-gated", 0, _rise_after(2000), 2500, 10.0, "iso-iter", eval_every=100)
    top = write_report(camp)[0].read_text()
    assert "- N=2500: 1 run(s) became unstable (`horizon-1/std-gated-s0`)" in top and "N=1000: 1 run" not in top


def test_s_star_uses_interpolation_between_evals(tmp_path):
    # RA's curve is piecewise linear between evals every 100 iterations; target 4.0 crossed at 450
    iteration_suite(tmp_path, (0, 1), lambda seed: 1 / 450, s=1.0)
    be = comparison(tmp_path).breakeven
    assert be.values == pytest.approx([1000 / 450] * 2)


# ---------------------------------------------------------------- the old time design


def test_time_budget_suite_still_reports(tmp_path):
    for seed in SIX:
        write_run(tmp_path, "sdpa", seed, linear(6.0, 1e-3), 1000, 10.0, "time", time_budget_s=10.0)
        write_run(tmp_path, "ra-triton", seed, linear(6.0, (1.4 + 0.01 * seed) / 1000), 500, 20.0, "time", time_budget_s=10.0)
    comp = comparison(tmp_path)
    assert comp.design == "time"
    assert comp.verdict("1").verdict == FAIL  # at 10 s: sdpa 5.0, RA 6 - 0.7 = 5.3
    be = comp.breakeven
    assert be.values == [] and "s* < 2.00" in be.headline("ra-triton")  # never within its 500 iterations


def test_time_design_judges_ra_against_the_controls_and_open_coded_ra_against_its_twin(tmp_path):
    for seed in (0, 1):
        for attn in ("sdpa", "open", "ra-open", "std-gated", "ra-norec", "ra-triton"):
            write_run(tmp_path, attn, seed, linear(6.0, 1e-3), 1000, 10.0, "time", time_budget_s=10.0)
    batches = load_batches(tmp_path)
    comps = judge_all(group_by_config([r for b in batches for r in b.runs]), {b.name: b for b in batches})
    pairs = {(c.candidate, c.baseline) for c in comps}
    assert ("ra-open", "open") in pairs and ("ra-triton", "open") not in pairs
    assert {("ra-triton", "std-gated"), ("ra-triton", "ra-norec"), ("ra-open", "sdpa")} <= pairs


def test_time_design_never_judges_a_short_overlap(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, linear(6.0, 1e-3), 1000, 10.0, "time", time_budget_s=10.0)
        # a finished run whose curve ends early (evals only up to 2 s of its 10 s)
        write_run(tmp_path, "ra-triton", seed, linear(6.0, 2e-3), 100, 20.0, "time", time_budget_s=10.0, eval_every=50)
        summary = tmp_path / f"ra-triton-s{seed}" / "summary.json"
        summary.write_text(json.dumps(json.loads(summary.read_text()) | {"train_time_s": 10.0}))
    c1 = comparison(tmp_path).verdict("1")
    assert c1.verdict == NO_VERDICT and all("skipped" in line for line in c1.per_seed)


# ---------------------------------------------------------------- the report files


def test_report_is_self_contained_and_honest(tmp_path):
    root = tmp_path / "suite"
    root.mkdir()
    write_calibration(root, {"ra-triton": 1.3}, floor=1.1)
    for seed in (0, 1):
        write_run(root, "sdpa", seed, linear(5.0, 1e-3), 1000, 10.0, "baseline", sources=True)
        rate = (1.1e-3, 0.95e-3)[seed]  # RA ahead in one seed, behind in the other
        write_run(root, "ra-triton", seed, linear(5.0, rate), 1000, 13.0, "iso-iter", gates=True, sources=True)
        write_run(root, "ra-triton", seed, linear(5.0, (1.4e-3, 1.2e-3)[seed]), 769, 13.0, "iso-time", gates=True)
        write_run(root, "ra-norec", seed, linear(5.0, rate * 0.98), 1000, 12.0, "iso-iter", gates=True)
    out = tmp_path / "out"
    md_path, html_path = write_report(root, out)
    md, page = md_path.read_text(), html_path.read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert not re.search(r"<script[^>]*src=|<link[^>]*href=|src=[\"']https?:", page, re.I)
    for needle in (
        "iteration design", "would need to be <=", "gpu_floor_ratio 1.1", "2 plan's literal (< 1/s)", "2 break-even (< 1)",
        "proxy: final val_loss at N iterations", "val_se (mean)", "0.0100", "Final val_loss per source domain", "english",
        "max over layers of |w - w_init|", "0.3000 (max 0.3000)", "ra-triton vs ra-norec", "sign-flip p cannot go below 0.05",
        "### 5. What is the minimum effective reciprocity?", "evidence: ", "By source domain of the eval set",
        "ra-triton, english: sdpa - ra-triton",
    ):
        assert needle in md, needle
    assert "**FAIL**" not in md and "**PASS**" not in md  # 2 seeds with these gaps carry no verdict


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(RabenchError, match="no runs"):
        load_runs(tmp_path)


def test_option_sets_and_roles_get_their_own_groups(tmp_path):
    for window in (64, 128):
        d = write_run(tmp_path, "ra-local", 0, linear(5.0, 1e-3), 100, 1.0, "iso-iter", name=f"ra-local-w{window}-s0")
        config = json.loads((d / "config.json").read_text())
        config["attn_options"] = {"window": window}
        (d / "config.json").write_text(json.dumps(config))
    write_run(tmp_path, "sdpa", 0, linear(5.0, 1e-3), 100, 1.0, "baseline")
    write_run(tmp_path, "ra-triton", 0, linear(5.0, 1e-3), 50, 1.0, "iso-time")
    labels = list(group_by_config(load_runs(tmp_path)))
    assert labels == ["sdpa", "ra-local(window=128)", "ra-local(window=64)", "ra-triton [iso-time]"]


def test_broken_calibration_is_a_one_line_error(tmp_path):
    iteration_suite(tmp_path, (0, 1), lambda seed: 2 / 1000, s=1.2)
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(RabenchError, match="calibration.json is not a valid JSON object"):
        load_batches(tmp_path)


def test_plateau_runs_judge_criterion_3_on_converged_losses(tmp_path):
    iteration_suite(tmp_path, (0, 1, 2), lambda seed: 1.2 / 1000, s=1.3)
    for seed, off in ((0, 0.0), (1, 0.01), (2, -0.01), (3, 0.005), (4, -0.005), (5, 0.002)):
        for attn, floor in (("sdpa", 3.5), ("ra-triton", 3.3)):
            run = write_run(tmp_path, attn, seed, lambda it, f=floor + off: f + 2 * math.exp(-it / 300), 2000, 10.0,
                            "plateau", name=f"{attn}-plateau-s{seed}")
            summary = json.loads((run / "summary.json").read_text())
            (run / "summary.json").write_text(json.dumps(summary | {"stop_reason": "plateau"}))
    c3 = comparison(tmp_path).verdict("3")
    assert c3.scope.startswith("converged") and c3.stats.n == 6
    assert c3.stats.mean == pytest.approx(0.2, abs=1e-3) and c3.verdict == PASS


def test_iso_time_sized_with_another_s_is_flagged_and_labels_stand_in_for_calibration(tmp_path):
    iteration_suite(tmp_path, (0, 1), lambda seed: 1.2 / 1000, s=1.25)
    for d in tmp_path.glob("ra-triton-isotime-s*"):
        config = json.loads((d / "config.json").read_text())
        config["labels"]["step_ratio"] = 1.4  # the suite sized these runs with an older calibration
        (d / "config.json").write_text(json.dumps(config))
    c1 = comparison(tmp_path).verdict("1")
    assert all("sized with s = 1.400 but the batch's calibration now says 1.250" in line for line in c1.per_seed)
    (tmp_path / "calibration.json").unlink()
    ratios = comparison(tmp_path).breakeven.ratios
    assert [round(r.s, 3) for r in ratios.values()] == [1.4]  # no calibration file: the s the suite used


def test_sparse_curves_are_called_rough(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1e-3), 100, 10.0, "baseline", eval_every=50)
        write_run(tmp_path, "ra-triton", seed, linear(5.0, 1.1e-3), 100, 12.0, "iso-iter", eval_every=50)
    md = write_report(tmp_path)[0].read_text()
    assert "fewer than 4 evaluations after iteration 0" in md


def test_an_uncertain_step_ratio_keeps_criterion_2_inconclusive(tmp_path):
    # RA reaches sdpa's final loss at ~500 of 1000 iterations: at s = 1.5 the time ratio is 0.75 (break-even PASS)
    iteration_suite(tmp_path, SIX, lambda seed: 1 / (500 + 10 * seed), s=1.5)
    assert verdicts(tmp_path)["2-break-even"] == PASS
    write_calibration(tmp_path, {"ra-triton": 1.5}, half_width=0.6)  # s somewhere in [0.9, 2.1]
    v = comparison(tmp_path).verdict("2-break-even")
    assert v.verdict == INCONCLUSIVE and "calibrated 95% bounds" in v.numbers


def test_a_wide_calibrated_step_ratio_is_named_in_the_cautions_with_its_numbers(tmp_path):
    iteration_suite(tmp_path, (0, 1), lambda seed: 1 / (500 + 10 * seed), s=1.5)  # half-width 0.02: 1% of s
    assert "step-time ratio s =" not in write_report(tmp_path)[0].read_text()
    write_calibration(tmp_path, {"ra-triton": 1.5}, half_width=0.09)  # [1.41, 1.59]: 6% of s
    md = write_report(tmp_path)[0].read_text()
    assert "ra-triton's step-time ratio s = 1.500 [1.410, 1.590] is uncertain: its 95% half-width 0.090 is 6% of s" in md
    assert md.count("step-time ratio s = ") == 1  # the baseline's s = 1 [1, 1] is exact
    write_calibration(tmp_path, {"ra-triton": 1.5, "ra-local": 2.0}, half_width=0.09)  # ra-local: no run here
    assert "ra-local's step-time ratio" not in write_report(tmp_path)[0].read_text()


def test_a_step_ratio_bounded_below_by_zero_cannot_fail_criterion_2(tmp_path):
    # a calibration too noisy to bound s (a tiny model's launch-bound steps on a GPU): its
    # log-scale interval underflows to [0, inf); the literal margin 1/s then has no upper bound
    iteration_suite(tmp_path, SIX, lambda seed: 1 / (2000 + 10 * seed), s=1.5)  # RA far behind
    assert verdicts(tmp_path)["2-literal"] == FAIL
    write_calibration(tmp_path, {"ra-triton": 1.5}, half_width=1.5)  # s in [0, 3.0]
    v = comparison(tmp_path).verdict("2-literal")
    assert v.verdict == INCONCLUSIVE and "unbounded above" in v.numbers


def test_summarize_gives_the_verdicts_in_a_few_lines(tmp_path):
    iteration_suite(tmp_path, (0,), lambda seed: 3 / 1000, s=1.1)
    text = summarize(tmp_path)
    assert "ra-triton vs sdpa: criterion 1: NO VERDICT" in text
    assert "would need to be <=" in text and "1.10x (calibrated" in text


def test_without_sdpa_ra_is_still_judged_against_the_control(tmp_path):
    for seed in SIX:
        write_run(tmp_path, "std-gated", seed, linear(6.0, 1e-3), 1000, 10.0, "time", time_budget_s=10.0)
        write_run(tmp_path, "ra-triton", seed, linear(6.0, (1.4 + 0.01 * seed) / 1000), 500, 20.0, "time", time_budget_s=10.0)
    assert verdicts(tmp_path, baseline="std-gated")["1"] == FAIL
    md = write_report(tmp_path)[0].read_text()
    assert "No sdpa run in this folder" in md and "### ra-triton vs std-gated" in md


def _rise_after(at: int, rate: float = 1e-3, climb: float = 5e-3) -> Curve:
    """val_loss falls like a healthy run until `at`, then climbs: a late divergence."""
    return lambda it: 5.0 - rate * min(it, at) + climb * max(it - at, 0)


def test_a_run_that_became_unstable_is_flagged_and_stays_in_its_pairs(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, linear(5.0, 1e-3), 1000, 10.0, "baseline", eval_every=10)
        curve = _rise_after(800) if seed == 1 else linear(5.0, 1.1e-3)
        write_run(tmp_path, "ra-triton", seed, curve, 1000, 12.0, "iso-iter", eval_every=10)
    md = write_report(tmp_path)[0].read_text()
    assert "## Training stability" in md
    assert "1 judged run(s) became unstable" in md
    assert "ra-triton-s1`: best val_loss 4.2000 at iteration 800, final 5.2000; val_loss rose 1.000 above its best" in md
    assert "ra-triton-s0`" not in md.split("## Training stability")[1].split("##")[0]
    assert "![ra-triton-s1 beside the runs of its seed in its batch](stability_ra-triton-s1.png)" in md
    assert (tmp_path / "stability_ra-triton-s1.png").stat().st_size > 1000
    assert comparison(tmp_path).verdicts[-1].stats.n == 2  # kept: dropping it would favour the config that diverged


def test_healthy_runs_pass_the_stability_check_and_a_lone_train_spike_is_caught(tmp_path):
    sdpa = write_run(tmp_path, "sdpa", 0, linear(5.0, 1e-3), 1000, 10.0, "baseline", eval_every=10)
    write_run(tmp_path, "ra-triton", 0, linear(5.0, 1.1e-3), 1000, 12.0, "iso-iter", eval_every=10)
    md = write_report(tmp_path)[0].read_text()
    assert "No judged run became unstable (val_loss more than 0.05 above its best earlier evaluation" in md
    records = [json.loads(line) for line in (sdpa / "metrics.jsonl").read_text().splitlines()]
    records[70]["train_loss"] += 1.5  # one logged loss spike; val_loss unharmed
    (sdpa / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = next(r for r in load_runs(tmp_path) if r.name == "sdpa-s0")
    jump, at = run.train_loss_spike()
    # the median of the 50 records before iteration 700 sits at iteration 445, 0.255 higher on the falling curve
    assert at == 700 and jump == pytest.approx(1.5 - 0.255, abs=1e-6)
    assert run.val_rise() == (0.0, run.val_rise()[1]) and math.isnan(run.val_rise()[1])
    assert "sdpa-s0`: best val_loss 4.0000 at iteration 1,000, final 4.0000; val_loss never rose; largest train_loss jump 1.25" \
        in write_report(tmp_path)[0].read_text()


def test_rerun_compare_finds_where_a_run_left_its_rerun(tmp_path):
    """benchmarks/rerun_compare.py: the same curve until iteration 800, then the original rises."""
    import importlib.util

    from rabench.analysis.runs import Run

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "rerun_compare.py"
    spec = importlib.util.spec_from_file_location("rerun_compare", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    healthy = linear(3.0, 1e-3)
    original = write_run(tmp_path / "a", "ra-triton", 0, lambda it: healthy(it) + (0.5 if it >= 800 else 0.0),
                         1000, 10.0, "iso-time")
    rerun = write_run(tmp_path / "b", "ra-triton", 0, healthy, 1000, 10.0, "iso-time")
    rows = compare.block_rows(Run.read(original, "a"), Run.read(rerun, "b"), block=400)
    assert [row.split("|")[1].strip() for row in rows] == ["0-400", "400-800", "800-1,000"]
    assert [float(row.split("|")[2]) for row in rows] == [0.0, 0.0, 0.5]
    compare.plot(Run.read(original, "a"), Run.read(rerun, "b"), tmp_path / "rerun.png")
    assert (tmp_path / "rerun.png").stat().st_size > 0


def test_the_design_line_says_calibrated_only_where_a_calibration_is(tmp_path):
    """A suite without calibration.json (the demo's equal-iteration runs) has no iso-time runs;
    its header must not claim an s calibrated on the card."""
    iteration_suite(tmp_path, [0, 1], lambda seed: 1.0 / 1000, s=1.1)
    assert "with s calibrated on the card" in write_report(tmp_path)[0].read_text()
    (tmp_path / "calibration.json").unlink()
    md = write_report(tmp_path)[0].read_text()
    assert "with s calibrated on the card" not in md and "no step-time calibration" in md


def test_a_verdict_cell_gives_its_own_pair_count_where_it_differs_from_the_rows(tmp_path):
    """Criterion 1 reads the iso-time runs, which a seed may lack: its p is the smallest 5 pairs can
    give, not 6, and the cell must say so beside the row's 6 seeds."""
    import shutil

    iteration_suite(tmp_path, range(6), lambda seed: 1 / (2000 + 10 * seed), s=1.5)
    shutil.rmtree(tmp_path / "ra-triton-isotime-s5")
    row = next(line for line in write_report(tmp_path)[0].read_text().splitlines() if line.startswith("| ra-triton | sdpa |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] == "6" and "; 5 pairs)" in cells[4] and "pairs)" not in cells[7], row
