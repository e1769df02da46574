"""`rabench suite --deadline`: what starts, what is stopped, and the estimate that decides."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rabench.rundir import RunFolder
from rabench.suite.deadline import EVAL_SHARE, FIRST_OVERHEAD_S, Deadline


def cfg(tmp_path: Path, attn: str = "ra-triton", iters: int | None = 1000, time_s: float | None = None,
        resume: bool = False, compile: bool = True, plateau: bool = False) -> SimpleNamespace:
    return SimpleNamespace(attn=attn, max_iters=iters, time_budget_s=time_s, until_plateau=plateau, resume=resume,
                           out=str(tmp_path / "run"), compile=compile)


def test_estimate_is_calibrated_steps_plus_evaluation_share_plus_overhead(tmp_path: Path) -> None:
    d = Deadline.after(1000, {"ra-triton": 20.0})
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(20.0 * (1 + EVAL_SHARE) + FIRST_OVERHEAD_S[True])
    assert d.estimate_s(cfg(tmp_path, compile=False)) == pytest.approx(23.0 + FIRST_OVERHEAD_S[False])
    assert d.estimate_s(cfg(tmp_path, attn="sdpa")) is None  # no calibration for it: unknown, so started
    assert d.estimate_s(cfg(tmp_path, plateau=True)) is None  # a plateau run's cap is not its length
    assert d.training_s(cfg(tmp_path, iters=None, time_s=90.0)) == 90.0  # a time-budget run: its budget


def test_a_resumed_run_is_estimated_from_where_it_stopped(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"iter": 750, "train_time_s": 60.0}) + "\n")
    d = Deadline.after(1000, {"ra-triton": 20.0})
    assert d.training_s(cfg(tmp_path, resume=True)) == pytest.approx(250 * 0.020)
    assert d.training_s(cfg(tmp_path, resume=False)) == pytest.approx(1000 * 0.020)
    assert d.training_s(cfg(tmp_path, iters=None, time_s=90.0, resume=True)) == pytest.approx(30.0)


def test_fits_against_the_time_left_and_learns_the_overhead(tmp_path: Path) -> None:
    d = Deadline.after(100, {"ra-triton": 50.0})  # 1000 iterations: 50 s of training, 57.5 s with evaluation
    assert not d.fits(cfg(tmp_path))  # 57.5 s + the 90 s guessed for compilation > 100 s
    # the guess is replaced by what finished runs show: 10 s beyond their training and evaluation
    d.learn(cfg(tmp_path), elapsed_s=67.5, trained_s=50.0)
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(67.5)
    assert d.fits(cfg(tmp_path))
    d.learn(cfg(tmp_path), elapsed_s=97.5, trained_s=50.0)  # the largest overhead seen counts
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(97.5)
    assert not Deadline.after(-1).fits(cfg(tmp_path))


def test_runs_finished_by_an_earlier_call_set_the_overhead(tmp_path: Path) -> None:
    # a fresh suite process (the next device call) starts from this machine's start-up times
    d = Deadline.after(1000, {"ra-triton": 50.0})
    d.learn_from_folder(cfg(tmp_path))  # no run there: nothing learned
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(57.5 + FIRST_OVERHEAD_S[True])
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "summary.json").write_text(json.dumps({"status": "interrupted", "wall_time_s": 500.0,
                                                     "train_time_s": 50.0}))
    d.learn_from_folder(cfg(tmp_path))  # a run stopped part-way is no measure of a whole run
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(57.5 + FIRST_OVERHEAD_S[True])
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "wall_time_s": 137.5,
                                                     "train_time_s": 100.0}))
    d.learn_from_folder(cfg(tmp_path))  # 137.5 - 100 x 1.15 = 22.5 s beyond training and evaluation
    assert d.estimate_s(cfg(tmp_path)) == pytest.approx(57.5 + 22.5)


def test_fits_is_false_for_a_run_longer_than_the_time_left(tmp_path: Path) -> None:
    d = Deadline.after(100, {"ra-triton": 50.0})
    d.learn(cfg(tmp_path), elapsed_s=60.0, trained_s=50.0)  # overhead 2.5 s
    assert d.fits(cfg(tmp_path, iters=1500))  # 75 s + 11.25 + 2.5
    assert not d.fits(cfg(tmp_path, iters=2000))  # 100 s + 15 + 2.5


def test_a_run_without_an_estimate_starts_only_with_twice_its_start_up_left(tmp_path: Path) -> None:
    # on a GPU every start is a compile; one stopped moments later throws it away with nothing saved
    plateau, eager = cfg(tmp_path, plateau=True), cfg(tmp_path, plateau=True, compile=False)
    assert Deadline.after(100).start_floor_s(plateau) == 2 * FIRST_OVERHEAD_S[True]
    assert not Deadline.after(2 * FIRST_OVERHEAD_S[True] - 5).fits(plateau)
    assert Deadline.after(2 * FIRST_OVERHEAD_S[True] + 5).fits(plateau)
    assert Deadline.after(2 * FIRST_OVERHEAD_S[False] + 5).fits(eager)
    assert not Deadline.after(2 * FIRST_OVERHEAD_S[False] - 1).fits(eager)
    d = Deadline.after(100)
    d.learn(cfg(tmp_path), elapsed_s=67.5, trained_s=50.0)  # start-up seen on this machine: 10 s
    assert d.start_floor_s(plateau) == pytest.approx(20.0) and d.fits(plateau)


def plateau_job(tmp_path: Path, name: str = "ra-triton-s1", compile: bool = False):
    from rabench.suite.jobs import PlannedRun, RunJob

    run = PlannedRun(name, "ra-triton", 1, "plateau", 80_000, None, None)
    job_cfg = cfg(tmp_path / name, plateau=True, compile=compile)
    Path(job_cfg.out).mkdir(parents=True)
    return RunJob(run, job_cfg, "start")


def stopped_at_the_deadline(d: Deadline, checkpoint: bool):
    """A stand-in for train(): the deadline comes while it runs (SIGTERM: KeyboardInterrupt), after a
    checkpoint was written or still starting up."""
    def train(run_cfg) -> dict:
        if checkpoint:
            (Path(run_cfg.out) / "ckpt.pt").write_bytes(b"saved")
        d.at = time.time() - 1
        raise KeyboardInterrupt
    return train


@pytest.mark.parametrize("checkpoint", [False, True], ids=["starting-up", "checkpointed"])
def test_a_run_stopped_before_its_first_checkpoint_is_reported_as_work_lost(tmp_path: Path, monkeypatch,
                                                                           checkpoint: bool) -> None:
    from rabench.errors import DeadlineReached
    from rabench.suite.execute import run_sequential

    d = Deadline.after(1000)
    monkeypatch.setattr("rabench.training.trainer.train", stopped_at_the_deadline(d, checkpoint))
    with pytest.raises(DeadlineReached) as info:
        run_sequential([plateau_job(tmp_path), plateau_job(tmp_path, "sdpa-s1")], lambda *a: None, d)
    message = str(info.value)
    if checkpoint:
        assert "1 stopped with a checkpoint (ra-triton-s1)" in message and "work lost" not in message
    else:
        assert "1 stopped without a checkpoint, their work lost: they start over (ra-triton-s1)" in message
        assert "stopped with a checkpoint" not in message
    # the run after it has no estimate: not started for the time left, not for a length it never had
    assert "1 run(s) of unknown length (to a plateau, or no calibrated step time) not started" in message
    assert "would not finish" not in message and "sdpa-s1" in message


def test_runs_without_an_estimate_are_not_started_for_too_little_time_left(tmp_path: Path, monkeypatch) -> None:
    from rabench.errors import DeadlineReached
    from rabench.suite.execute import run_sequential

    def train(run_cfg) -> dict:
        raise AssertionError("a run of unknown length started with less than twice its start-up left")

    monkeypatch.setattr("rabench.training.trainer.train", train)
    said: list[str] = []
    with pytest.raises(DeadlineReached) as info:
        run_sequential([plateau_job(tmp_path, compile=True)], said.append, Deadline.after(100))
    assert "at least 180 s left (twice its start-up)" in said[0]
    message = str(info.value)
    assert "would not finish" not in message and "(too little time left to start one: ra-triton-s1)" in message


def suite_argv(out: Path, data: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rabench", "suite", "--out", str(out), "--data", data, "--attn", "sdpa",
            "--seeds", "0,1", "--preset", "tiny", "--calib-steps", "1", "--calib-windows", "2", "--batch-size", "2",
            "--seq-len", "16", "--eval-batches", "1", "--log-every", "5", "--ckpt-every", "1h", "--no-progress", *extra]


@pytest.mark.slow
def test_runs_that_cannot_finish_are_not_started(austen_data, tmp_path: Path) -> None:
    out = tmp_path / "suite"
    argv = suite_argv(out, austen_data(60_000), "--iters", "1000000", "--eval-every", "1000000",
                      "--devices", "cpu,cpu", "--deadline", "60s")
    started = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 124, proc.stderr
    assert time.time() - started < 60  # it did not wait for the deadline: nothing could fit
    assert "deadline reached: 2 run(s) not started" in proc.stderr and "run the same command" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert RunFolder(out / "sdpa-s0").state() == "absent"


@pytest.mark.slow
@pytest.mark.parametrize("devices", [["--devices", "cpu,cpu"], []], ids=["parallel", "sequential"])
def test_runs_going_at_the_deadline_checkpoint_and_the_same_command_continues(austen_data, tmp_path: Path,
                                                                               devices: list[str]) -> None:
    out = tmp_path / "suite"
    # to a plateau with a cap no run reaches: the estimate is unknown, so the runs start and meet the deadline.
    # Side by side, each worker process imports torch before its run folder exists: on a GPU machine
    # running eight test shards at once that took most of 25 s, so the parallel case gets longer.
    argv = suite_argv(out, austen_data(60_000), "--iters", "1000000", "--until-plateau", "--eval-every", "1000000",
                      "--deadline", "50s" if devices else "25s", *devices)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 124, proc.stderr
    assert "deadline reached" in proc.stderr and "stopped with a checkpoint" in proc.stderr
    states = {s: RunFolder(out / f"sdpa-s{s}").state() for s in (0, 1)}
    assert states[0] == "checkpointed", proc.stderr
    if devices:  # both ran side by side and both checkpointed
        assert states[1] == "checkpointed", proc.stderr
    else:  # one after another: the second was never reached
        assert "not started" in proc.stderr or states[1] in ("absent", "created")
    assert (out / "report.md").is_file()  # the report of what finished is still written (here: nothing judged)
