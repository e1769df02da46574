"""The analysis layer on hand-made run folders: criteria edge cases and the report files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable

import pytest

from rabench.analysis import write_report
from rabench.analysis.criteria import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    judge_all,
    paired_t_test,
    sign_flip_p,
    t_two_sided_p,
)
from rabench.analysis.curves import eval_curve, time_to_reach
from rabench.analysis.runs import group_by_config, load_runs
from rabench.errors import RabenchError

Curve = Callable[[int], float]


def write_run(
    root: Path,
    attn: str,
    seed: int,
    loss: Curve,
    ms_per_iter: float,
    budget_s: float = 10.0,
    eval_every: int = 100,
    summary: bool = True,
    until_plateau: bool = False,
    gates: bool = False,
    with_val: bool = True,
) -> Path:
    """A run folder whose val_loss follows loss(iter), trained for budget_s at ms_per_iter."""
    run = root / f"{attn}-s{seed}"
    run.mkdir(parents=True)
    n_layer = 4
    config = {
        "attn": attn, "attn_options": {}, "preset": "tiny", "seed": seed, "batch_size": 2, "seq_len": 64,
        "grad_accum": 1, "time_budget_s": budget_s, "max_iters": None, "until_plateau": until_plateau,
        "eval_every": eval_every, "eval_tokens": 1024, "lr": 6e-4, "device": "cuda",
        "gpu_name": "NVIDIA H100 80GB HBM3", "compile": True, "world_size": 1, "n_layer": n_layer,
        "n_head": 2, "n_embd": 32, "n_params": 1000, "data": "x", "torch_version": "2.x", "rabench_version": "0.1.0",
    }
    (run / "config.json").write_text(json.dumps(config))
    iters = int(budget_s * 1000 / ms_per_iter)
    lines = []
    for it in range(eval_every, iters + 1, eval_every):
        rec = {
            "iter": it, "tokens": it * 128, "train_time_s": it * ms_per_iter / 1000, "wall_time_s": it * ms_per_iter / 800,
            "train_loss": loss(it) + 0.05, "lr": 6e-4, "ms_per_iter": ms_per_iter, "tokens_per_s": 128e3 / ms_per_iter,
            "peak_mem_gb": 1.0,
        }
        if with_val:
            rec["val_loss"] = loss(it)
        if gates:
            frac = it / iters
            rec["gates"] = {
                "w_std": [0.75 - 0.1 * frac] * n_layer,
                "w_rec": [0.15 + 0.1 * frac * layer for layer in range(n_layer)],
                "w_disc": [0.09] * n_layer,
            }
        lines.append(json.dumps(rec))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if summary:
        values = [loss(it) for it in range(eval_every, iters + 1, eval_every)]
        (run / "summary.json").write_text(json.dumps({
            "status": "done", "iters": iters, "tokens": iters * 128, "train_time_s": budget_s,
            "wall_time_s": budget_s * 1.2, "final_val_loss": values[-1] if with_val else None,
            "best_val_loss": min(values) if with_val else None, "ms_per_iter": ms_per_iter,
            "tokens_per_s": 128e3 / ms_per_iter, "peak_mem_gb": 1.0,
            "stop_reason": "plateau" if until_plateau else "time budget",
        }))
    return run


def decay(floor: float, scale: float = 8.0, tau: float = 1000.0) -> Curve:
    return lambda it: floor + scale * math.exp(-it / tau)


def verdicts(folder: Path, candidate: str, baseline: str = "sdpa") -> list[str]:
    comparison = comparison_of(folder, candidate, baseline)
    return [v.verdict for v in comparison.verdicts]


def comparison_of(folder: Path, candidate: str, baseline: str = "sdpa"):
    comparisons = judge_all(group_by_config(load_runs(folder)))
    return next(c for c in comparisons if c.candidate == candidate and c.baseline == baseline)


# ---------------------------------------------------------------- statistics and curves


def test_t_distribution_matches_tables():
    assert t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-5)
    assert t_two_sided_p(12.7062, 1) == pytest.approx(0.05, abs=1e-5)
    assert t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    t, p = paired_t_test([0.1, 0.12, 0.09])
    assert t > 0 and p < 0.01
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)  # 2 of 8 sign patterns


def test_time_to_reach_interpolates_between_evals(tmp_path):
    run_dir = write_run(tmp_path, "sdpa", 0, lambda it: 5.0 - it / 1000, ms_per_iter=1.0, budget_s=1.0)
    x, y = eval_curve(load_runs(run_dir)[0], "time")
    assert time_to_reach(x, y, 4.45) == pytest.approx(0.55)
    assert time_to_reach(x, y, 1.0) is None


# ---------------------------------------------------------------- criteria edge cases


def test_equal_curves_fail_criteria_1_and_2(tmp_path):
    write_run(tmp_path, "sdpa", 0, decay(3.0), 1.0)
    write_run(tmp_path, "ra-triton", 0, decay(3.0), 1.0)
    comp = comparison_of(tmp_path, "ra-triton")
    assert [v.verdict for v in comp.verdicts] == [FAIL, FAIL, INCONCLUSIVE]
    assert comp.slowdown == pytest.approx(1.0)
    assert comp.verdicts[0].stats.mean == pytest.approx(0.0)
    assert "needs the full test" in comp.verdicts[2].numbers
    assert any("one seed" in note for note in comp.notes)


def test_crossing_curves_pass_at_budget_and_report_fraction(tmp_path):
    write_run(tmp_path, "sdpa", 0, lambda it: 3.5 + 2.0 * math.exp(-it / 1000), 1.0)
    write_run(tmp_path, "ra-triton", 0, lambda it: 3.4 + 3.0 * math.exp(-it / 1000), 1.0)
    comp = comparison_of(tmp_path, "ra-triton")
    c1, c2, _ = comp.verdicts
    assert c1.verdict == PASS
    # curves cross at iter 1000 ln(10) ~ 2303 of 100..10000: RA lower on ~79% of the range
    fraction = float(re.search(r"lower on (\d+)%", c1.numbers).group(1)) / 100
    assert 0.7 < fraction < 0.85
    assert c2.verdict == PASS  # reaches sdpa's final loss at ~3.4 s of 10 s, s = 1


def test_better_per_iteration_but_slower_per_second(tmp_path):
    write_run(tmp_path, "sdpa", 0, decay(3.0, tau=1000), 1.0)
    write_run(tmp_path, "ra-triton", 0, decay(2.95, tau=800), 2.5)
    comp = comparison_of(tmp_path, "ra-triton")
    assert comp.slowdown == pytest.approx(2.5)
    assert [v.verdict for v in comp.verdicts][:2] == [FAIL, FAIL]
    md = Path(write_report(tmp_path)[0]).read_text()
    q1 = md.split("1. Does RA improve convergence speed")[1].split("### 2.")[0]
    assert "(lower)" in q1  # per iteration RA is ahead


def test_never_reaches_target_fails_criterion_2_with_numbers(tmp_path):
    write_run(tmp_path, "sdpa", 0, decay(3.0), 1.0)
    write_run(tmp_path, "ra-triton", 0, decay(3.3), 1.0)
    c2 = comparison_of(tmp_path, "ra-triton").verdicts[1]
    assert c2.verdict == FAIL
    assert "never reached" in c2.numbers
    assert any("never reached it" in line and "best 3.3" in line for line in c2.per_seed)


def test_several_seeds_paired_test(tmp_path):
    offsets = {0: 0.0, 1: 0.01, 2: -0.008}
    for seed, off in offsets.items():
        write_run(tmp_path, "sdpa", seed, decay(3.5 + off), 1.0, until_plateau=True)
        write_run(tmp_path, "ra-triton", seed, decay(3.3 + off + 0.002 * seed), 1.0, until_plateau=True)
        write_run(tmp_path, "ra-local", seed, decay(3.5 + off + 0.004 * (seed - 1)), 1.0, until_plateau=True)
    comp = comparison_of(tmp_path, "ra-triton")
    c1, c2, c3 = comp.verdicts
    assert comp.seeds == [0, 1, 2]
    assert c1.verdict == PASS and c1.stats.n == 3
    assert c1.stats.mean == pytest.approx(0.198, abs=0.005)
    assert c1.stats.p_t < 0.001
    assert c1.stats.p_sign_flip == pytest.approx(0.25)
    assert c3.verdict == PASS  # converged (plateau) and far outside the seed-to-seed noise
    # ra-local: mean gap ~0 against sdpa, within noise: not better
    local = comparison_of(tmp_path, "ra-local")
    assert local.verdicts[2].verdict == FAIL
    assert local.verdicts[0].verdict in (FAIL, INCONCLUSIVE)


def test_missing_sdpa_makes_criteria_inconclusive(tmp_path):
    write_run(tmp_path, "ra-triton", 0, decay(3.0), 2.0)
    write_run(tmp_path, "std-gated", 0, decay(3.1), 1.1)
    assert verdicts(tmp_path, "ra-triton") == [INCONCLUSIVE] * 3
    assert "no sdpa run" in comparison_of(tmp_path, "ra-triton").verdicts[0].numbers
    # RA can still be judged against the learned-temperature control
    assert verdicts(tmp_path, "ra-triton", "std-gated")[0] == PASS
    md = Path(write_report(tmp_path)[0]).read_text()
    assert "No sdpa run in this folder" in md


def test_interrupted_run_is_used_and_marked(tmp_path):
    write_run(tmp_path, "sdpa", 0, decay(3.0), 1.0)
    write_run(tmp_path, "ra-triton", 0, decay(2.9), 1.0, budget_s=6.0, summary=False)
    comp = comparison_of(tmp_path, "ra-triton")
    assert comp.verdicts[0].verdict == PASS  # compared at 6 s, where both have data
    assert "interrupted" in comp.verdicts[0].per_seed[0]
    md = Path(write_report(tmp_path)[0]).read_text()
    assert "ra-triton-s0 was interrupted" in md


def test_run_without_val_loss_and_std_gated_control(tmp_path):
    write_run(tmp_path, "sdpa", 0, decay(3.0), 1.0)
    write_run(tmp_path, "std-gated", 0, decay(2.98), 1.1)
    write_run(tmp_path, "ra-triton", 0, decay(3.0), 2.0, with_val=False)
    assert verdicts(tmp_path, "ra-triton") == [INCONCLUSIVE] * 3
    control = comparison_of(tmp_path, "std-gated")
    assert control.slowdown == pytest.approx(1.1)
    md = Path(write_report(tmp_path)[0]).read_text()
    assert "ra-triton-s0 has no val_loss records" in md


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(RabenchError, match="no runs"):
        load_runs(tmp_path)


# ---------------------------------------------------------------- the report files


def test_report_is_self_contained_and_answers_the_plan(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "sdpa", seed, decay(3.0 + 0.01 * seed), 1.0)
        write_run(tmp_path, "ra-triton", seed, decay(2.9 + 0.01 * seed, tau=700), 1.6, gates=True)
        write_run(tmp_path, "ra-local", seed, decay(2.95 + 0.01 * seed, tau=800), 1.2, gates=True)
    (tmp_path / "suite.json").write_text("{}")
    out = tmp_path / "out"
    md_path, html_path = write_report(tmp_path, out)
    assert md_path == out / "report.md" and html_path == out / "report.html"
    md, page = md_path.read_text(), html_path.read_text()
    assert (out / "val_loss_vs_time.png").is_file() and (out / "ms_per_iter.png").is_file()
    assert (out / "gates_ra-triton.png").is_file()
    assert page.count("data:image/png;base64,") >= 6
    assert not re.search(r"<script[^>]*src=|<link[^>]*href=|src=[\"']https?:|url\(", page, re.I)
    assert "http://" not in page and "https://" not in page
    for needle in (
        "card: NVIDIA H100 80GB HBM3", "seeds: 0, 1", "excluding evaluation and compilation",
        "1.60x", "time to sdpa's final val_loss", "### 5. What is the minimum effective reciprocity?",
        "final w_rec by layer", "first / middle / last third", "paired t-test",
    ):
        assert needle in md, needle
    for k in (1, 2, 3):
        assert re.search(rf"\| {k}\. .*\| \*\*(PASS|FAIL|INCONCLUSIVE)\*\* \|", md)


def test_single_run_folder_and_option_labels(tmp_path):
    run_dir = write_run(tmp_path / "suite", "sdpa", 0, decay(3.0), 1.0)
    md_path, html_path = write_report(run_dir, tmp_path / "single")
    assert "sdpa" in md_path.read_text() and html_path.is_file()
    for window in (64, 128):
        d = write_run(tmp_path / f"w{window}", "ra-local", 0, decay(2.9), 1.5)
        config = json.loads((d / "config.json").read_text())
        config["attn_options"] = {"window": window}
        (d / "config.json").write_text(json.dumps(config))
        d.rename(tmp_path / "suite" / f"ra-local-w{window}-s0")
    labels = list(group_by_config(load_runs(tmp_path / "suite")))
    assert labels == ["sdpa", "ra-local(window=128)", "ra-local(window=64)"]


def test_until_plateau_run_stopped_by_its_time_cap_is_not_converged(tmp_path):
    for seed in (0, 1):
        for attn, floor in (("sdpa", 3.5), ("ra-triton", 3.3)):
            run = write_run(tmp_path, attn, seed, decay(floor + 0.01 * seed), 1.0, until_plateau=True)
            summary = json.loads((run / "summary.json").read_text())
            summary["stop_reason"] = "time budget"
            (run / "summary.json").write_text(json.dumps(summary))
    c3 = comparison_of(tmp_path, "ra-triton").verdicts[2]
    assert c3.verdict == INCONCLUSIVE and "needs the full test" in c3.numbers
