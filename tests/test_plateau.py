"""The --until-plateau stopping rule."""

import math

import pytest

from rabench.errors import RabenchError
from rabench.training.plateau import PlateauRule, plateau_index


def test_monotone_improvement_never_plateaus():
    rule = PlateauRule(patience=3, min_delta=0.01)
    assert not any(rule.update(5.0 - 0.05 * i) for i in range(200))


def test_flat_curve_plateaus_after_exactly_patience_evals():
    rule = PlateauRule(patience=4, min_delta=0.01)
    results = [rule.update(3.0) for _ in range(8)]
    # the first evaluation sets the best; the 4th evaluation without improvement plateaus
    assert results == [False, False, False, False, True, True, True, True]


def test_noise_smaller_than_min_delta_plateaus():
    rule = PlateauRule(patience=5, min_delta=0.01)
    noise = [0.004, -0.003, 0.002, -0.004, 0.001, -0.002, 0.003]
    results = [rule.update(3.2 + n) for n in noise]
    assert results.index(True) == 5


def test_small_steps_that_add_up_count_as_improvement():
    # 0.006 per eval never beats min_delta in one step, but beats the best every 2 steps
    assert plateau_index([4.0 - 0.006 * i for i in range(100)], patience=2, min_delta=0.01) is None


def test_improvement_resets_the_count_and_the_rule_stays_plateaued():
    rule = PlateauRule(patience=2, min_delta=0.01)
    assert [rule.update(v) for v in (3.0, 3.0, 2.5, 2.5)] == [False, False, False, False]
    assert rule.update(2.5) is True
    assert rule.update(1.0) is True  # sticky: the trainer stops at the first True


def test_nan_counts_as_no_improvement():
    rule = PlateauRule(patience=2, min_delta=0.01)
    assert [rule.update(v) for v in (3.0, math.nan, math.nan)] == [False, False, True]


def test_defaults_and_validation():
    rule = PlateauRule()
    assert (rule.patience, rule.min_delta) == (5, 0.01)
    assert "min_delta" in PlateauRule.__doc__ and "patience" in PlateauRule.__doc__
    with pytest.raises(ValueError):
        PlateauRule(patience=0)


# ---- the rule on synthetic curves (evaluations every eval_every iterations) ------------------------------
PATIENCE, MIN_DELTA = 5, 0.01


def power_law(n: int) -> list[float]:
    """A run that keeps falling, ever more slowly: 1.5 + 2.5 / sqrt(i + 1)."""
    return [1.5 + 2.5 / math.sqrt(i + 1) for i in range(n)]


def window_gain(curve: list[float], i: int, patience: int = PATIENCE) -> float:
    """How much the window ending at evaluation i beat the best before it."""
    return min(curve[:i - patience + 1]) - min(curve[i - patience + 1:i + 1])


def test_a_curve_that_keeps_falling_does_not_plateau_before_its_cap():
    # each 5-evaluation window gains more than 0.01 until evaluation ~73: a cap at 60 evaluations comes first
    capped = power_law(60)
    assert all(window_gain(capped, i) > MIN_DELTA for i in range(PATIENCE, 60))
    assert plateau_index(capped, PATIENCE, MIN_DELTA) is None
    # run on, it plateaus at the first window that gains less than min_delta, not before and not later
    longer = power_law(300)
    at = plateau_index(longer, PATIENCE, MIN_DELTA)
    first_flat = next(i for i in range(PATIENCE, 300) if window_gain(longer, i) < MIN_DELTA)
    assert at == first_flat and 60 < at < 100


def test_a_curve_that_turns_up_plateaus_at_its_minimum():
    """Over-fitting: val_loss falls, bottoms out at evaluation 32, then rises. The rule fires at most
    `patience` evaluations after the minimum, and its best evaluation is within min_delta of the
    curve's minimum: stopping there gives up less than min_delta."""
    curve = [2.0 + math.exp(-i / 10) + 0.004 * i for i in range(120)]
    lowest = curve.index(min(curve))
    assert 30 <= lowest <= 34
    at = plateau_index(curve, PATIENCE, MIN_DELTA)
    assert at is not None and at <= lowest + PATIENCE
    assert min(curve[:at + 1]) - min(curve) <= MIN_DELTA
    assert min(curve[at + 1:]) >= min(curve[:at + 1]) - MIN_DELTA  # nothing better than min_delta came later


@pytest.mark.parametrize("seed", range(20))
def test_noise_within_min_delta_makes_no_false_plateau_and_a_flat_trend_plateaus(seed: int):
    """A falling trend that flattens (2 + 0.6 exp(-i/12)), with noise of sd 0.002 on every evaluation
    (the fixed val set's eval-to-eval jitter is of that order): no plateau while the trend still gains
    more than 2 x min_delta per window, and one within a few windows of the trend's gain dropping
    below min_delta / 2."""
    import random

    rng = random.Random(seed)
    trend = [2.0 + 0.6 * math.exp(-i / 12) for i in range(200)]
    noisy = [t + rng.gauss(0.0, 0.002) for t in trend]
    at = plateau_index(noisy, PATIENCE, MIN_DELTA)
    assert at is not None
    still_falling = [i for i in range(PATIENCE, 200) if trend[i - PATIENCE] - trend[i] > 2 * MIN_DELTA]
    assert at > max(still_falling)
    flat_from = next(i for i in range(PATIENCE, 200) if trend[i - PATIENCE] - trend[i] < MIN_DELTA / 2)
    assert at <= flat_from + 2 * PATIENCE


@pytest.mark.parametrize("seed", range(20))
def test_a_steady_fall_with_noise_never_plateaus(seed: int):
    """0.004 per evaluation (0.02 per window) under uniform noise of +-0.004: the window's gain is at
    least 0.02 - 0.008 > min_delta, so noise alone never stops the run."""
    import random

    rng = random.Random(seed)
    curve = [4.0 - 0.004 * i + rng.uniform(-0.004, 0.004) for i in range(300)]
    assert plateau_index(curve, PATIENCE, MIN_DELTA) is None


def test_the_rule_is_a_function_of_the_curve_so_replay_agrees():
    """The trainer replays its stored evaluations into a fresh rule on resume; the report replays
    metrics.jsonl: both must find the same evaluation as the uninterrupted rule."""
    curve = [2.0 + math.exp(-i / 10) + 0.004 * i for i in range(60)]
    at = plateau_index(curve, PATIENCE, MIN_DELTA)
    assert at is not None
    for cut in range(1, 60):  # a run cut after `cut` evaluations and resumed
        replayed = PlateauRule(PATIENCE, MIN_DELTA)
        before_cut = [replayed.update(v) for v in curve[:cut]]
        if cut > at:
            assert before_cut.index(True) == at
            continue
        assert not any(before_cut)
        fired = [i for i, v in enumerate(curve[cut:], start=cut) if replayed.update(v)]
        assert fired[0] == at


def test_cooldown_length_is_explicit_or_a_share_of_the_run():
    from rabench.training.plateau import cooldown_length

    assert cooldown_length(2000, None, 0.1) == 200
    assert cooldown_length(3, None, 0.1) == 1  # never zero: the last cooldown step reaches min_lr
    assert cooldown_length(2000, 50, 0.1) == 50


def test_plateau_schedule_cools_down_over_a_share_of_the_iterations():
    from rabench.training.schedule import make_schedule

    s = make_schedule(1.0, 0.1, 10_000, None, 0.0, 2, until_plateau=True)
    assert s.at(999, 1000) == 1.0  # no plateau yet: lr, whatever the cap
    # plateau at iteration 1000: cooldown 100 iterations, linear to min_lr
    assert s.at(1049, 1050, cooldown_start=1000) == pytest.approx(0.55)
    assert s.at(1099, 1100, cooldown_start=1000) == pytest.approx(0.1)


def test_a_plateau_runs_warm_up_does_not_depend_on_its_cap(tmp_path):
    """The budget of a plateau run is only a cap (it may change on resume), so the warm-up is
    warmup_frac of the default N, not of the cap; a cap change is then curve-neutral."""
    from rabench.fileio import json_form
    from rabench.training.config import TrainConfig, curve_changing_differences
    from rabench.presets import PRESET_RECORDS

    def cfg(**kw):
        return TrainConfig(attn="sdpa", data=str(tmp_path), out=str(tmp_path / "r"), preset="tiny",
                           until_plateau=True, device="cpu", **kw)

    short, long_ = cfg(max_iters=1000).resolved(), cfg(max_iters=100_000).resolved()
    assert short.warmup_iters == long_.warmup_iters == round(0.05 * PRESET_RECORDS["tiny"].default_iters)
    assert cfg(max_iters=1000, warmup_iters=7).resolved().warmup_iters == 7
    old = json_form(short.to_dict()) | {"device": "cpu"}
    assert curve_changing_differences(old, cfg(max_iters=100_000)) == []
    assert TrainConfig(attn="sdpa", data=".", out="r", preset="tiny", max_iters=9).resolved().warmup_iters is None


# ---- a plateau run cut anywhere resumes to the same curve ---------------------------------------------
# Tiny preset on CPU. min_delta 100 makes the rule fire on the third evaluation (iteration 8, evaluations
# every 4); the cooldown is 75% of those 8 iterations = 6, so the run stops at 14. Checkpoints every 3.
TIMING = {"train_time_s", "wall_time_s", "ms_per_iter", "tokens_per_s", "peak_mem_gb"}
PLATEAU_RUN = dict(attn="sdpa", preset="tiny", batch_size=4, seq_len=32, eval_every=4, eval_batches=2,
                   warmup_iters=2, log_every=2, progress_bar=False, device="cpu", until_plateau=True,
                   plateau_patience=2, plateau_min_delta=100.0, cooldown_frac=0.75, max_iters=1000,
                   ckpt_every="3it")


def plateau_config(data: str, out, **kw):
    from rabench.training import TrainConfig

    return TrainConfig(data=data, out=str(out), **(PLATEAU_RUN | kw))


def untimed(run) -> list[dict]:
    from rabench.rundir import RunFolder

    return [{k: v for k, v in r.items() if k not in TIMING | {"run_id"}} for r in RunFolder(run).metrics()]  # ids differ by design


def curve_summary(run) -> dict:
    from rabench.rundir import RunFolder

    summary = RunFolder(run).summary()
    return {k: summary[k] for k in ("status", "stop_reason", "iters", "final_val_loss", "best_val_loss",
                                    "plateau_iter", "cooldown_iters")}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The resume tests ask for bitwise-equal curves, so every run here sums in one order: one
    intra-op thread. With many threads on a loaded machine the CPU kernels' reductions can split
    differently from run to run (1e-7 apart at the first evaluation on a 16-core GPU host running
    12 test shards), which is not what these tests are about."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def plateau_data(austen_data) -> str:
    return austen_data(120_000)


@pytest.fixture(scope="module")
def uncut(plateau_data: str, tmp_path_factory: pytest.TempPathFactory):
    from rabench.training import train

    run = tmp_path_factory.mktemp("uncut") / "run"
    summary = train(plateau_config(plateau_data, run))
    assert summary["stop_reason"] == "plateau" and summary["plateau_iter"] == 8 and summary["cooldown_iters"] == 6
    assert summary["iters"] == 14
    return run


def cut_and_resume(data: str, run, faults: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run with each fault in turn (each cut must checkpoint and stop), then resume to the end."""
    from rabench.errors import RunInterrupted
    from rabench.training import train

    for i, fault in enumerate(faults):
        monkeypatch.setenv("RABENCH_FAULT", fault)
        with pytest.raises(RunInterrupted):
            train(plateau_config(data, run, resume=i > 0))
    monkeypatch.delenv("RABENCH_FAULT")
    train(plateau_config(data, run, resume=True))


@pytest.mark.parametrize("faults", [
    ["step@5:TERM"],  # before the plateau
    ["eval@8:INT"],  # inside the evaluation that finds the plateau: abandoned, redone on resume
    ["step@11:TERM"],  # inside the cooldown
    ["ckpt@12:TERM"],  # during a checkpoint write inside the cooldown
    ["step@14:TERM"],  # the last step, before the final evaluation
    ["step@5:TERM", "step@11:INT"],  # cut twice, as a long run is across device calls
], ids=lambda f: "+".join(f))
@pytest.mark.slow
def test_a_plateau_run_cut_anywhere_resumes_to_the_same_curve(plateau_data: str, uncut, tmp_path,
                                                              monkeypatch: pytest.MonkeyPatch, faults: list[str]):
    run = tmp_path / "run"
    cut_and_resume(plateau_data, run, faults, monkeypatch)
    assert untimed(run) == untimed(uncut)
    assert curve_summary(run) == curve_summary(uncut)


@pytest.mark.slow
def test_a_plateau_run_killed_inside_its_cooldown_resumes_to_the_same_curve(plateau_data: str, uncut, tmp_path):
    """SIGKILL (no checkpoint at the cut): the run resumes from its last periodic checkpoint (iteration 9,
    already in the cooldown) and still writes the same records."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import torch

    run = tmp_path / "run"
    args = ["train", "--attn", "sdpa", "--preset", "tiny", "--batch-size", "4", "--seq-len", "32", "--eval-every", "4",
            "--eval-batches", "2", "--warmup-iters", "2", "--log-every", "2", "--iters", "1000", "--ckpt-every", "3it",
            "--until-plateau", "--plateau-patience", "2", "--plateau-min-delta", "100", "--cooldown-frac", "0.75",
            "--no-progress", "--device", "cpu", "--data", plateau_data, "--out", str(run)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "RABENCH_FAULT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the uncut run's threads: the same float sums
    killed = subprocess.run([sys.executable, "-m", "rabench", *args], capture_output=True, text=True, timeout=120,
                            env=env | {"RABENCH_FAULT": "step@11"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run([sys.executable, "-m", "rabench", *args, "--resume"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert untimed(run) == untimed(uncut)
    assert curve_summary(run) == curve_summary(uncut)


# ---- the report's full-test section, on hand-made plateau run folders ------------------------------------
def write_plateau_run(root, attn: str, seed: int, floor: float, *, plateau_at: int | None = 1200, cooldown: int = 120,
                      ms: float = 10.0, machine: str | None = "m-a", train_tokens: int | None = 64_000,
                      record_plateau: bool = True, cap: int = 3000, card: str = "H100"):
    """A finished plateau run: val_loss = floor + 2 exp(-it/100) (with a final cooldown drop of 0.05), train
    loss 0.1 below it, evaluations every 100 iterations; 128 tokens per iteration."""
    import json

    run = root / f"{attn}-s{seed}"
    run.mkdir(parents=True)
    config = {"attn": attn, "attn_options": {}, "preset": "tiny", "seed": seed, "tokens_per_iter": 128,
              "until_plateau": True, "plateau_patience": 5, "plateau_min_delta": 0.01, "cooldown_iters": None,
              "cooldown_frac": 0.1, "eval_every": 100, "max_iters": cap, "time_budget_s": None, "gpu_name": card,
              "host": "vm", "device": "cuda", "data": str(root / "no-such-data"),
              "labels": {"role": "plateau", "step_ratio": None, "baseline": "sdpa", "suite": root.name}}
    if machine is not None:
        config["machine_id"] = machine
    if train_tokens is not None:
        config["data_regime"] = {"sources": ["austen"], "train_tokens": train_tokens, "val_tokens": 1000}
    (run / "config.json").write_text(json.dumps(config))
    end = plateau_at + cooldown if plateau_at is not None else cap
    lines = []
    for it in list(range(0, end, 100)) + [end]:
        val = floor + 2 * math.exp(-it / 100) - (0.05 if plateau_at is not None and it == end else 0.0)
        for step in (it - 50, it):  # two log records per evaluation interval
            if step <= 0 or step > end:
                continue
            rec = {"iter": step, "tokens": step * 128, "train_time_s": step * ms / 1000, "train_loss": val - 0.1,
                   "ms_per_iter": ms}
            if step == it:
                rec |= {"val_loss": val, "val_se": 0.02}
            lines.append(json.dumps(rec))
        if it == 0:
            lines.append(json.dumps({"iter": 0, "tokens": 0, "train_time_s": 0.0, "train_loss": None, "val_loss": val,
                                     "val_se": 0.02}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"status": "finished", "stop_reason": "plateau" if plateau_at is not None else "max iters",
               "iters": end, "train_time_s": end * ms / 1000, "ms_per_iter": ms}
    if record_plateau:
        summary |= {"plateau_iter": plateau_at, "cooldown_iters": cooldown if plateau_at is not None else None}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_plateau_point_reads_time_loss_gap_and_epochs(tmp_path):
    from rabench.analysis.plateau import plateau_point
    from rabench.analysis.runs import Run
    from rabench.data.regime import repeated_token_share

    p = plateau_point(Run.read(write_plateau_run(tmp_path, "sdpa", 0, 3.0, ms=20.0), "."))
    assert p.reached and p.plateau_iter == 1200 and not p.recomputed
    assert p.plateau_time_s == pytest.approx(1200 * 0.02)  # train time at the evaluation that found it
    assert p.total_iters == 1320 and p.total_time_s == pytest.approx(1320 * 0.02)
    final = 3.0 + 2 * math.exp(-1320 / 100) - 0.05
    assert p.final_loss == pytest.approx(final) and p.final_se == 0.02  # the last evaluation, not the best
    assert p.best_loss == pytest.approx(final) and p.best_iter == 1320
    assert p.gap_at_plateau == pytest.approx(0.1)
    assert p.epochs_at(1200) == pytest.approx(1200 * 128 / 64_000)
    assert repeated_token_share(p.epochs_at(1200)) == pytest.approx(1 - (1 - math.exp(-2.4)) / 2.4)


def test_a_run_without_plateau_iter_is_replayed_and_unknowns_say_so(tmp_path):
    from rabench.analysis.plateau import plateau_point
    from rabench.analysis.runs import Run

    run = write_plateau_run(tmp_path, "sdpa", 0, 3.0, plateau_at=1200, record_plateau=False, machine=None,
                            train_tokens=None)
    p = plateau_point(Run.read(run, "."))
    evals = [m for m in Run.read(run, ".").evals]
    at = plateau_index([m["val_loss"] for m in evals], 5, 0.01)
    assert at is not None and p.recomputed and p.plateau_iter == evals[at]["iter"] < 1200
    assert p.machine == "unknown" and math.isnan(p.epochs_at(1200))
    capped = plateau_point(Run.read(write_plateau_run(tmp_path / "b", "sdpa", 0, 3.0, plateau_at=None), "."))
    assert not capped.reached and capped.plateau_iter is None


def test_the_report_gives_the_full_test_table_and_judges_criterion_3_at_the_plateau(tmp_path):
    """sdpa and ra-norec to a plateau, 3 seeds; ra-norec ends 0.2 lower in every seed and takes 1.1x the time.
    Seed 2's ra-norec started on another machine: the report says so. A fourth ra-norec seed hit its cap."""
    import json

    from rabench.analysis import write_report

    suite = tmp_path / "full"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"until_plateau": True, "design": "iso", "max_iters": 3000}))
    for seed, off in ((0, 0.0), (1, 0.01), (2, -0.01)):
        write_plateau_run(suite, "sdpa", seed, 3.5 + off)
        write_plateau_run(suite, "ra-norec", seed, 3.3 + off, ms=11.0, machine="m-b" if seed == 2 else "m-a")
    write_plateau_run(suite, "ra-norec", 3, 3.3, plateau_at=None)
    md, _ = write_report(suite)
    text = md.read_text()
    assert "## The full test: to a val_loss plateau, then a cooldown" in text
    assert "plateau when 5 evaluations in a row (every 100 iterations) do not beat the best before them by 0.01" in text
    assert "10% of the iterations at the plateau" in text
    section = text.split("## The full test")[1].split("\n## ")[0]
    assert "| ra-norec | 3 of 4 | 0, 1, 2 | 13.2 s ± 0.0 s | 14.5 s ± 0.0 s | 1,200 ± 0 | 3.2500 ± 0.0100 |" in section
    assert "| sdpa | 3 of 3 | 0, 1, 2 | 12.0 s ± 0.0 s |" in section  # the capped seed is in no mean
    assert "| ra-norec | 3 | m-a | stopped by max iters before a plateau | none | n/a |" in section
    line = next(x for x in text.splitlines() if x.startswith("- ra-norec: sdpa - ra-norec final val_loss"))
    assert "+0.2000" in line and "over 3 seeds" in line and "**TOO FEW PAIRS**" in line  # the exact test needs 6
    assert "1.10x sdpa's (mean over 3 pair(s) on one kind of card)" in line
    assert "seed 2: ra-norec-s2 on machine m-b, sdpa-s2 on m-a (one kind of card)" in text
    assert "ra-norec-s3: stopped by max iters before a plateau; not paired" in text
    assert "2.40" in text  # epochs at the plateau: 1200 x 128 / 64,000
    assert "read as over-fitting" not in text  # the gap narrows through the cooldown here (0.1 -> 0.075)


def test_the_report_describes_a_plateau_suite_as_the_plateau_design_and_reads_criterion_1_on_its_time_curves(tmp_path):
    """A suite of runs to a plateau (suite.json: design iso, until_plateau) is neither the time design nor
    short of pairs: criterion 1 reads the plateau pairs' time curves. sdpa (10 ms/iter) ends after its
    cooldown at 13.2 s, 0.05 below its plateau; ra-norec (11 ms/iter, 0.2 lower) is at iteration 1,200 then."""
    import json

    from rabench.analysis import write_report

    suite = tmp_path / "full"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"until_plateau": True, "design": "iso", "max_iters": 3000}))
    for seed, off in ((0, 0.0), (1, 0.01), (2, -0.01)):
        write_plateau_run(suite, "sdpa", seed, 3.5 + off)
        write_plateau_run(suite, "ra-norec", seed, 3.3 + off, ms=11.0)
    text = write_report(suite)[0].read_text()
    assert "- design: plateau design: every run trained to its own val_loss plateau (capped at N iterations)" in text
    assert "time design" not in text and "time-budget" not in text and "N = not recorded" not in text
    assert "runs to a val_loss plateau, capped at N = 3,000 iterations" in text
    row = next(x for x in text.splitlines() if x.startswith("| 1. val_loss below the baseline's at equal training"))
    assert "[plateau runs]" in row and "no usable pair" not in row and "read on the measured time curves" in row
    gap = 0.2 - 0.05 + 2 * (math.exp(-13.2) - math.exp(-12))  # sdpa at its end minus ra-norec at iteration 1,200
    assert f"mean margin {gap:+.4f}" in row
    details = text.split("## Success criteria in detail")[1]
    assert f"seed 0: at t = 13.2 s sdpa {3.5 + 2 * math.exp(-13.2) - 0.05:.4f} vs candidate" in details
    assert "[plateau runs' time curves]" in details
    assert "[converged: runs stopped at a val_loss plateau]" in details
    assert "[from plateau runs' iteration curves" in text


def test_a_plateau_suite_calibrates_nothing_and_its_report_reads_the_runs_step_times(austen_data, tmp_path, capsys,
                                                                                     monkeypatch):
    """Runs to a plateau are sized by no step ratio: the suite measures none (on a GPU, a compile and timed
    steps per config before any run), its runs carry no ratio, and the report reads s from the runs' own
    ms/iter. A calibration.json an older suite left in such a folder draws no caution about equal-time runs."""
    import json

    from rabench.analysis import write_report
    from rabench.rundir import RunFolder
    from rabench.suite import SuitePlan, run_suite

    def calibrate(*args, **kwargs):
        raise AssertionError("a plateau suite measured step times")

    monkeypatch.setattr("rabench.suite.calibrate.calibrate", calibrate)
    out = tmp_path / "suite"
    plan = SuitePlan(attns=["sdpa", "ra-norec"], seeds=[0], preset="tiny", max_iters=60, until_plateau=True,
                     train=dict(batch_size=2, seq_len=16, eval_every=4, eval_batches=1, log_every=2, device="cpu",
                                plateau_patience=2, plateau_min_delta=100.0))
    run_suite(plan, out, austen_data(60_000), progress_bar=False)
    said = capsys.readouterr().out
    assert "calibrating" not in said and "step-time ratios" not in said and not (out / "calibration.json").exists()
    for name in ("sdpa-s0", "ra-norec-s0"):
        folder = RunFolder(out / name)
        assert folder.state() == "finished" and folder.summary()["stop_reason"] == "plateau"
        assert folder.config()["labels"]["step_ratio"] is None
    with pytest.raises(RabenchError, match="--calibrate-only with --until-plateau"):
        run_suite(plan, out, austen_data(60_000), progress_bar=False, calibrate_only=True)

    text = write_report(out)[0].read_text()
    assert "(measured ms/iter ratio of the runs, not calibrated)" in text and "Step-time calibration" not in text
    assert next(x for x in text.splitlines() if x.startswith("| ra-norec | plateau | cpu"))
    wide = {"ratio": 1.1, "ratio_ci95": [0.5, 2.0], "ms_per_iter": 30.0}
    (out / "calibration.json").write_text(json.dumps({"card": "cpu", "configs": {"ra-norec": wide}}))
    text = write_report(out)[0].read_text()
    assert "equal-time runs" not in text


def test_a_plateau_past_an_epoch_whose_gap_widens_reads_as_over_fitting(tmp_path):
    import json

    from rabench.analysis.plateau import overfitting_names, plateau_point
    from rabench.analysis.runs import Run

    run = write_plateau_run(tmp_path, "sdpa", 0, 3.0)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:  # train loss falls 0.2 through the cooldown while val_loss holds
        if r["iter"] > 1200:
            r["train_loss"] -= 0.2
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    p = plateau_point(Run.read(run, "."))
    assert p.epochs_at(1200) > 1 and p.gap_at_end > p.gap_at_plateau
    assert overfitting_names([p]) == ["sdpa-s0"]
    short = plateau_point(Run.read(write_plateau_run(tmp_path / "b", "sdpa", 0, 3.0, train_tokens=10**7), "."))
    assert overfitting_names([short]) == []  # 0.015 epochs: not over-fitting, whatever the gap does


def test_a_run_that_says_plateau_but_recorded_no_point_is_still_paired_on_its_final_loss(tmp_path):
    """An older run (no plateau_iter) whose curve this rule would not call flat: its stop reason stands,
    the report says the point is unknown and gives no time to plateau."""
    import json

    from rabench.analysis.plateau import plateau_point, stop_text
    from rabench.analysis.runs import Run

    run = write_plateau_run(tmp_path, "sdpa", 0, 3.0, plateau_at=300, record_plateau=False)
    p = plateau_point(Run.read(run, "."))
    assert p.reached and p.plateau_iter is None and math.isnan(p.plateau_time_s)
    assert stop_text(p) == "plateau (where: not recorded, and not found by this rule)"
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == "plateau"


def test_a_seed_trained_twice_counts_once_and_times_compare_only_on_one_kind_of_card(tmp_path):
    """Two suite folders to a plateau; seed 0 is in both, its second pair on two kinds of card (sdpa on
    an H100, ra-norec on an H200): criterion 3 has 3 seed margins, not 4, and the time ratio leaves
    the cross-card pair out."""
    import json

    from rabench.analysis.plateau import pair_points, plateau_point
    from rabench.analysis.runs import load_runs
    from rabench.stats import paired_stats

    for name, seeds in (("full-a", (0, 1, 2)), ("full-b", (0,))):
        suite = tmp_path / name
        suite.mkdir()
        (suite / "suite.json").write_text(json.dumps({"until_plateau": True, "design": "iso", "max_iters": 3000}))
        for seed in seeds:
            write_plateau_run(suite, "sdpa", seed, 3.5)
            write_plateau_run(suite, "ra-norec", seed, 3.3 if name == "full-a" else 3.4, ms=11.0,
                              card="H100" if name == "full-a" else "H200", machine=f"m-{name}")
    points = [plateau_point(r) for r in load_runs(tmp_path)]
    pairs, notes = pair_points(points, "ra-norec")
    assert len(pairs) == 4 and notes == []
    stats = paired_stats([q.loss_margin for q in pairs], [q.seed for q in pairs])
    assert stats.values == pytest.approx((0.15, 0.2, 0.2))  # seed 0's two pairs averaged: 3 seeds, not 4
    from rabench.analysis import write_report

    text = write_report(tmp_path)[0].read_text()
    line = next(x for x in text.splitlines() if x.startswith("- ra-norec: sdpa - ra-norec final val_loss"))
    assert "(4 pairs over 3 seeds, averaged per seed)" in line and "mean over 3 pair(s) on one kind of card" in line
    assert "seed 0: ra-norec-s0 on machine m-full-b, sdpa-s0 on m-a (different cards (H100, H200)" in text


def test_a_plateau_runs_progress_does_not_follow_its_cap():
    """ra-anneal reads the share of the run done; a plateau run's budget is a cap that may change on
    resume, so its progress stays 0 (an iteration or time run's progress is its share of the budget)."""
    from types import SimpleNamespace

    from rabench.training.trainer import RunState, Trainer

    state = RunState(iter=500, train_time_s=30.0)
    for cap in ({"time_budget_s": 60.0, "max_iters": None}, {"time_budget_s": None, "max_iters": 1000}):
        plateau = SimpleNamespace(cfg=SimpleNamespace(until_plateau=True, **cap), state=state)
        fixed = SimpleNamespace(cfg=SimpleNamespace(until_plateau=False, **cap), state=state)
        assert Trainer.progress(plateau) == 0.0 and Trainer.progress(fixed) == 0.5


def test_pairs_of_runs_without_a_machine_id_say_so(tmp_path):
    from rabench.analysis.plateau import PlateauPair, pairing_notes, plateau_point
    from rabench.analysis.runs import Run

    root = tmp_path
    base = plateau_point(Run.read(write_plateau_run(root, "sdpa", 0, 3.5, machine=None), "."))
    cand = plateau_point(Run.read(write_plateau_run(root, "ra-norec", 0, 3.3, machine="m-a"), "."))
    same = plateau_point(Run.read(write_plateau_run(root / "b", "ra-norec", 0, 3.3, machine=None), "."))
    assert pairing_notes([PlateauPair(0, cand, base)]) == [
        "seed 0: machine not recorded for sdpa-s0 (run folders from before machine_id) (one kind of card)"]
    assert "ra-norec-s0 and sdpa-s0" in pairing_notes([PlateauPair(0, same, base)])[0]


def test_plateau_settings_change_no_fixed_length_curve():
    """A fixed-length run never reads the plateau rule or its cooldown, so a resume with other
    values of those settings trains the same curve; under --until-plateau they do change it."""
    from rabench.training.config import TrainConfig, curve_changing_differences

    def cfg(**kw) -> TrainConfig:
        return TrainConfig(attn="sdpa", data="d", out="o", max_iters=100, device="cpu", **kw)

    stored = cfg().resolved().to_dict()
    stored |= {"cooldown_iters": 200, "plateau_patience": 3}
    assert curve_changing_differences(stored, cfg()) == []
    stored_plateau = cfg(until_plateau=True).resolved().to_dict() | {"cooldown_iters": 200, "plateau_patience": 3}
    diffs = curve_changing_differences(stored_plateau, cfg(until_plateau=True))
    assert sorted(d.split(":")[0] for d in diffs) == ["cooldown_iters", "plateau_patience"]


def test_runs_to_a_plateau_pair_across_machines_in_the_verdicts_and_say_so(tmp_path):
    """A plateau run outlives a device lease, so a seed's sdpa and candidate runs start on different
    machines: the verdict table pairs them (as the plateau section does) and names the crossing;
    fixed-length runs on two machines still never pair."""
    import json

    from rabench.analysis import write_report
    from rabench.analysis.pairing import machine_note, pair_runs
    from rabench.analysis.runs import load_runs

    def runs_of(attn: str, folder) -> list:
        return [r for r in load_runs(folder) if r.attn == attn]

    suite = tmp_path / "full"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"until_plateau": True, "design": "iso", "max_iters": 3000}))
    for seed in (0, 1):
        write_plateau_run(suite, "sdpa", seed, 3.5, machine=f"m-sdpa-{seed}")
        write_plateau_run(suite, "ra-norec", seed, 3.3, machine=f"m-cand-{seed}")
    pairs, notes = pair_runs(runs_of("ra-norec", tmp_path), runs_of("sdpa", tmp_path))
    assert [p.seed for p in pairs] == [0, 1] and notes == []
    assert machine_note(pairs).startswith("2 of 2 pairs cross machines")
    row = next(x for x in write_report(tmp_path)[0].read_text().splitlines() if x.startswith("| ra-norec | sdpa |"))
    quality, measured_on = row.split("|")[-3:-1]
    assert "TOO FEW PAIRS" in quality and "converged" in measured_on, row  # 2 seeds paired at the plateau

    for path in suite.glob("*/config.json"):  # the same runs as fixed-length ones: another machine never pairs
        config = json.loads(path.read_text())
        config["until_plateau"], config["labels"]["role"] = False, "iso-iter"
        path.write_text(json.dumps(config))
    assert pair_runs(runs_of("ra-norec", tmp_path), runs_of("sdpa", tmp_path))[0] == []
