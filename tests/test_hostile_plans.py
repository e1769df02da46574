"""Hostile and edge inputs to `rabench suite`: each is refused in one line (exit 2) before any
calibration or data preparation, and nothing on disk changes. Grow this list with every input
class found to slip through."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rabench.cli import main

BASE_PLAN = 'preset = "tiny"\nattns = ["sdpa", "ra-local", "ra-sparse"]\niters = 3\n'

PLAN_CASES = [
    # non-finite and out-of-range numbers
    ("margin = nan", "margin must be a finite number"),
    ("margin = inf", "margin must be a finite number"),
    ("margin = true", "margin must be int or float or a table"),
    ('[margin]\n"1" = nan', "margin must be a finite number"),
    ('[margin]\n"4" = 0.01', "keyed"),
    ("equivalence_margin = 0", "equivalence_margin must be a finite number > 0"),
    ("equivalence_margin = nan", "equivalence_margin must be a finite number > 0"),
    ('time = "nan"', "duration"),
    ("iters = 0", "iters must be an integer of at least 1"),
    ("iters = 2.5", "iters must be int"),
    ("calib_windows = true", "calib_windows must be int"),
    ('design = "fast"', "design 'fast' is unknown"),
    ("bogus = 1", "unknown keys ['bogus']"),
    # seeds a generator can take
    ("seeds = [9223372036854775808]", "seeds must be a list of integers from 0 to 2**63 - 1"),
    ("seeds = [99999999999999999999999]", "from 0 to 2**63 - 1"),
    ("seeds = [-1]", "from 0 to 2**63 - 1"),
    ("seeds = [1.5]", "from 0 to 2**63 - 1"),
    # per-attention options against the registry's declared types
    ("[options.ra-local]\nwindow = 6.5", "option window must be an integer, got 6.5"),
    ("[options.ra-local]\nwindow = true", "option window must be an integer, got True"),
    ("[options.ra-local]\nwindow = [64]", "option window must be an integer, got [64]"),
    ('[options.ra-local]\nwindow = "64"', "window = '64' is a string"),
    ("[options.ra-local]\nwidth = 3", "has no option 'width'"),
    ("[options.ra-sparse]\np = nan", "option p must be a finite number, got nan"),
    ("[options.ra-sparse]\nbackend = 3", "option backend must be a string"),
    ("[options.ra-local]\nwindow = {a = 1}", "option window must be an integer"),
    # [train]: the TrainConfig's own checks, before any calibration
    ('[train]\ncompile = "yes"', "compile must be true or false, got 'yes'"),
    ("[train]\nverify_data = 1", "verify_data must be true or false"),
    ('[train]\ncompile_mode = "fastest"', "compile_mode 'fastest'"),
    ("[train]\nlr = nan", "lr must be a positive finite number"),
    ("[train]\nlr = -0.001", "lr must be a positive finite number"),
    ("[train]\nbatch_size = 0", "batch_size must be an integer of at least 1"),
    ("[train]\nwarmup_frac = 1.5", "warmup_frac must lie in [0.0, 1.0)"),
    ("[train]\ngate_lr_mult = inf", "gate_lr_mult must be a positive finite number"),
    ('[train]\ndevice = "tpu"', "device 'tpu' is not one of"),
    ("[train]\nbogus = 1", "unknown training settings in the plan: ['bogus']"),
    ("[train]\nseed = 3", "the suite sets them per run"),
    # the length ladder
    ("ladder = [1.0]", "ladder must list step ratios r > 0 other than 1"),
    ("ladder = [nan]", "ladder must list step ratios"),
    ("ladder = [-1.05]", "ladder must list step ratios"),
    ('ladder = ["1.05"]', "ladder must list step ratios"),
    ("ladder = [1.05, 1.05]", "ladder lists a value twice"),
    ('ladder = [1.05]\ntime = "5m"\ndesign = "time"', "a length ladder belongs to the iso design"),
    # learning-rate sweeps
    ("lr = [6e-4]\nselection_seeds = [100]", "an lr sweep needs two rates or more"),
    ("lr = [3e-4, 6e-4]", "give --selection-seeds"),
    ("lr = [3e-4, 6e-4]\nselection_seeds = [0]", "seeds [0] are both selection and verdict seeds"),
    ("lr = [0.0, 6e-4]\nselection_seeds = [100]", "lr must list positive learning rates"),
    ("lr = [inf, 6e-4]\nselection_seeds = [100]", "lr must list positive learning rates"),
    ("lr = [3e-4, 6e-4]\nselection_seeds = [-1]", "selection_seeds must be a list of integers from 0"),
    ("lr = [3e-4, 6e-4]\nselection_seeds = [100]\n[train]\nlr = 1e-3", "drop [train] lr"),
    ("selection_seeds = [100]", "an lr sweep needs two rates or more"),
]

CLI_CASES = [
    (["--seeds", "99999999999999999999999"], "from 0 to 2**63 - 1"),
    (["--seeds", "0,-1"], "from 0 to 2**63 - 1"),
    (["--ladder", "1.05,abc"], "--ladder '1.05,abc': write comma-separated numbers"),
    (["--ladder", "0"], "ladder must list step ratios"),
    (["--lr", "3e-4,x"], "--lr '3e-4,x': write comma-separated numbers"),
    (["--lr", "3e-4,6e-4", "--selection-seeds", "0"], "both selection and verdict seeds"),
    (["--lr", "nan"], "lr must be a positive finite number"),
    (["--selection-seeds", "a"], "--selection-seeds 'a': write comma-separated integers"),
    (["--gate-lr-mult", "0"], "gate_lr_mult must be a positive finite number"),
]


def tree(root: Path) -> dict[str, str]:
    """Every path under root with a digest of its bytes: what 'nothing changed' compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder holding an earlier suite (suite.json, a run folder) that a refused call must leave alone."""
    old = tmp_path / "suite"
    (old / "sdpa-s0").mkdir(parents=True)
    (old / "suite.json").write_text('{"design": "iso"}\n')
    (old / "sdpa-s0" / "config.json").write_text('{"attn": "sdpa"}\n')
    return tmp_path


def refused(argv: list[str], message: str | None, workspace: Path, capsys) -> None:
    before = tree(workspace)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal (one line: OneLineParser)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("rabench") and "error:" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert message is None or message in err, err
    assert tree(workspace) == before


@pytest.mark.parametrize("toml,message", PLAN_CASES, ids=[c[0].replace("\n", " ") for c in PLAN_CASES])
def test_a_hostile_plan_is_refused_in_one_line_and_changes_nothing(toml: str, message: str, workspace: Path,
                                                                   capsys) -> None:
    plan = workspace / "plan.toml"
    base = BASE_PLAN.replace("iters = 3\n", "") if toml.startswith("iters") else BASE_PLAN
    plan.write_text(base + toml + "\n")
    refused(["suite", str(plan), "--out", str(workspace / "suite")], message, workspace, capsys)


@pytest.mark.parametrize("args,message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_hostile_suite_flags_are_refused_in_one_line_and_change_nothing(args: list[str], message: str | None,
                                                                        workspace: Path, capsys) -> None:
    refused(["suite", "--out", str(workspace / "suite"), "--preset", "tiny", "--attn", "sdpa,ra-local",
             "--iters", "3"] + args, message, workspace, capsys)


def test_a_nan_attention_option_is_blamed_on_the_option(workspace: Path, capsys) -> None:
    argv = ["train", "--attn", "ra-sparse", "--attn-opt", "p=nan", "--preset", "tiny", "--data", "x", "--out",
            str(workspace / "run"), "--iters", "1"]
    refused(argv, "attention 'ra-sparse' option p must be a finite number", workspace, capsys)


def test_a_plan_path_that_is_a_folder_is_named_so(workspace: Path, capsys) -> None:
    refused(["suite", str(workspace), "--out", str(workspace / "suite")], "is a folder", workspace, capsys)


def test_until_plateau_with_a_time_budget_says_what_the_time_does(tmp_path: Path, monkeypatch, capsys) -> None:
    """Not refused: the time is each run's cap, and the suite says so before it trains."""
    from rabench import suite
    from rabench.suite import execute
    from rabench.suite.plan import SuitePlan

    planned: list[list[str]] = []
    monkeypatch.setattr(execute, "run_sequential", lambda jobs, say, deadline: planned.append([j.run.name for j in jobs]))
    plan = SuitePlan(attns=["sdpa"], preset="tiny", time_budget_s=300.0, until_plateau=True,
                           train={"device": "cpu"})
    suite.run_suite(plan, tmp_path / "s", "data", progress_bar=False)
    out = capsys.readouterr().out
    assert "300 s of training time is each run's cap" in out and planned == [["sdpa-s0"]]
