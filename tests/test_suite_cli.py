"""The suite, the report and the CLI end to end on the CPU (tiny preset, bundled Austen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rabench.cli import main
from rabench.training import TrainConfig, train
from rabench.rundir import RunFolder
from rabench.experiment import PLAN_ATTNS
from rabench.suite import run_suite
from rabench.suite.plan import PlanOverrides, SuitePlan, build_plan, load_plan


@pytest.fixture(scope="module")
def data_dir(austen_data) -> str:
    return austen_data(120_000)


SMALL = {"batch_size": 4, "seq_len": 32, "eval_every": 4, "eval_batches": 2, "warmup_iters": 2, "log_every": 2, "device": "cpu"}


@pytest.mark.slow
def test_suite_runs_every_config_and_seed_then_skips_finished_runs(data_dir: str, tmp_path: Path, capsys) -> None:
    plan = SuitePlan(attns=["sdpa", "ra-open", "std-gated"], seeds=[0, 1], preset="tiny", max_iters=8,
                     isotime_attns=[], calib_steps=1, calib_windows=2, train=SMALL)
    run_dirs = run_suite(plan, tmp_path / "suite", data_dir, progress_bar=False)
    assert sorted(p.name for p in run_dirs) == sorted(["sdpa-s0", "ra-open-s0", "std-gated-s0", "sdpa-s1", "ra-open-s1", "std-gated-s1"])
    first = {p.name: RunFolder(p).metrics() for p in run_dirs}
    # same data order and hyperparameters: sdpa and std-gated start from the same val loss at iter 0
    assert first["sdpa-s0"][0]["val_loss"] == pytest.approx(first["std-gated-s0"][0]["val_loss"], abs=0.05)
    assert first["sdpa-s0"][-1]["val_loss"] != first["sdpa-s1"][-1]["val_loss"]  # seeds differ
    capsys.readouterr()
    run_suite(plan, tmp_path / "suite", data_dir, progress_bar=False)
    assert capsys.readouterr().out.count("done, skipped") == 6

    from rabench.analysis import write_report

    md, html = write_report(tmp_path / "suite")
    text = md.read_text()
    for needle in ("ra-open", "std-gated", "PASS", "FAIL", "INCONCLUSIVE"):
        assert needle in text or needle in ("PASS",)  # PASS may legitimately not occur
    assert "data:image/png;base64" in html.read_text()


@pytest.mark.slow
def test_suite_resumes_an_interrupted_run(data_dir: str, tmp_path: Path) -> None:
    plan = SuitePlan(attns=["sdpa"], seeds=[0], preset="tiny", max_iters=8, calib_steps=1, calib_windows=2, train=SMALL)
    cfg = TrainConfig(attn="sdpa", data=data_dir, out=str(tmp_path / "suite" / "sdpa-s0"), preset="tiny",
                      max_iters=8, progress_bar=False, **SMALL)
    train(cfg)
    summary = tmp_path / "suite" / "sdpa-s0" / "summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"status": "interrupted"}))
    assert RunFolder(tmp_path / "suite" / "sdpa-s0").state() == "checkpointed"
    run_suite(plan, tmp_path / "suite", data_dir, progress_bar=False)  # resumes, does not refuse the folder
    assert RunFolder(tmp_path / "suite" / "sdpa-s0").state() == "finished"


def test_until_plateau_stops_after_plateau_and_cooldown(data_dir: str, tmp_path: Path) -> None:
    # min_delta larger than any improvement: the rule fires after `patience` evaluations
    cfg = TrainConfig(attn="sdpa", data=data_dir, out=str(tmp_path / "run"), preset="tiny", until_plateau=True,
                      plateau_patience=2, plateau_min_delta=100.0, cooldown_iters=4, max_iters=100,
                      progress_bar=False, **SMALL)
    summary = train(cfg)
    assert summary["stop_reason"] == "plateau"
    assert summary["iters"] == 8 + 4  # plateau declared at the eval of iter 8 (evals at 0, 4, 8), then 4 cooldown iters
    lrs = [r["lr"] for r in RunFolder(tmp_path / "run").metrics()]
    assert lrs[-1] == pytest.approx(3e-4, rel=1e-6)  # cooled down to min_lr


def test_the_command_line_goes_over_the_plan_file_in_one_place(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('attns = ["sdpa", "ra-open"]\nseeds = [0, 1]\ntime = "10m"\npreset = "tiny"\n'
                         '[train]\nbatch_size = 4\n')
    given = PlanOverrides(seeds=[5], max_iters=7, lr=[1e-3], train={"seq_len": 32})
    plan = build_plan(plan_file, given, None, lambda preset, device: preset or "gpt2-124m")
    assert plan.attns == ["sdpa", "ra-open"] and plan.seeds == [5] and plan.preset == "tiny"
    assert plan.max_iters == 7 and plan.time_budget_s is None and plan.design == "iso"  # --iters replaced the time
    assert plan.train == {"batch_size": 4, "lr": 1e-3, "seq_len": 32} and plan.lr == []  # one rate: every run's
    devices_seen: list[str | None] = []
    plan = build_plan(None, PlanOverrides(attns=["sdpa"]), ["cpu", "cpu"],
                      lambda preset, device: devices_seen.append(device) or "tiny")
    assert devices_seen == ["cpu"] and plan.preset == "tiny"  # the default preset is chosen for the workers' device


def test_plan_file_overrides_the_default_plan(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('attns = ["sdpa", "ra-local"]\nseeds = [0, 1, 2]\ntime = "10m"\n[options.ra-local]\nwindow = 64\n')
    plan = load_plan(plan_file)
    assert plan.attns == ["sdpa", "ra-local"] and plan.seeds == [0, 1, 2] and plan.time_budget_s == 600
    assert plan.options == {"ra-local": {"window": 64}}
    assert load_plan(None).attns == PLAN_ATTNS == ["sdpa", "open", "ra-open", "ra-triton", "std-gated", "ra-norec"]


@pytest.mark.parametrize("argv,message", [
    (["train", "--attn", "nope", "--data", "x", "--out", "y", "--iters", "1"], "unknown attention 'nope'"),
    (["train", "--attn", "sdpa", "--preset", "tiny", "--data", "/nonexistent", "--out", "OUT", "--iters", "1"], "not a prepared data folder"),
    (["train", "--attn", "sdpa", "--data", "x", "--out", "y", "--time", "ten minutes"], "cannot read duration"),
    (["train", "--attn", "sdpa", "--preset", "tiny", "--data", "x", "--out", "y"], "give a budget"),
    (["train", "--attn", "ra-local", "--attn-opt", "width=3", "--data", "x", "--out", "y", "--iters", "1"], "has no option 'width'"),
    (["prepare", "/nonexistent/file.jsonl", "--out", "OUT"], "nonexistent"),
    (["prepare", "hf:", "--out", "OUT"], "hf"),
    (["suite", "/nonexistent/plan.toml", "--out", "OUT"], "plan file"),
    (["suite", "--out", "OUT", "--seeds", "a,b"], "--seeds"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--design", "iso", "--time", "1m"], "needs --design time"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--attn", "ra-open", "--iters", "5"], "add it to the attentions"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--attn", "sdpa,nope"], "unknown attention 'nope'"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--devices", "cpu,0"], "--devices"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--calib-windows", "1"], "calib_windows >= 2"),
    (["suite", "--out", "OUT", "--preset", "tiny", "--data", "/nonexistent", "--attn", "sdpa", "--iters", "2"],
     "not a prepared data folder"),
    (["report", "/nonexistent"], "nonexistent"),
])
def test_bad_input_is_one_line_without_traceback(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rabench: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("prepare", "train", "suite", "report", "bench", "demo", "attentions"):
        assert command in out
