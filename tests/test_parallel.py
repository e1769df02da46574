"""Parallel runs on one host (issue 14), scheduled on CPU worker slots: several processes at
once, one log per run, a failing run that does not stop the others, and a suite end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rabench.cli import main
from rabench.errors import RabenchError
from rabench.rundir import RunFolder
from rabench.training.config import TrainConfig
from rabench.suite.parallel import RunsFailed, parse_devices, run_parallel, worker_env
from rabench.suite.jobs import PlannedRun, RunJob

SMALL = {"batch_size": 2, "seq_len": 16, "eval_every": 3, "eval_batches": 1, "log_every": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def data_dir(austen_data) -> str:
    return austen_data(60_000)


def job(name: str, data: str, out: Path, iters: int = 3, action: str = "start") -> RunJob:
    run = PlannedRun(name, "sdpa", 0, "baseline", iters, None, 1.0)
    cfg = TrainConfig(attn="sdpa", data=data, out=str(out / name), preset="tiny", max_iters=iters,
                      labels={"role": "baseline"}, **SMALL)
    return RunJob(run, cfg, action)


@pytest.mark.slow
def test_workers_run_concurrently_and_a_failed_run_does_not_stop_the_others(data_dir: str, tmp_path: Path) -> None:
    jobs = [job("a", data_dir, tmp_path), job("broken", str(tmp_path / "no-such-data"), tmp_path),
            job("b", data_dir, tmp_path), job("c", data_dir, tmp_path)]
    lines: list[str] = []
    with pytest.raises(RunsFailed) as info:
        run_parallel(jobs, ["cpu", "cpu"], say=lines.append, status_every_s=0.0)
    assert info.value.failed == ["broken"]
    assert "1 of 4 runs failed: broken" in str(info.value)
    for name in ("a", "b", "c"):
        assert RunFolder(tmp_path / name).state() == "finished"
        assert (tmp_path / name / "train.log").is_file()
    # the failure's own one-line error is in its log and in the suite's output
    assert "not a prepared data folder" in (tmp_path / "broken" / "train.log").read_text()
    assert any("broken: FAILED (exit 2)" in ln and "rabench: error:" in ln for ln in lines)
    # both slots were busy at once: "a" and "broken" were launched together, before anything ended
    starts = [i for i, ln in enumerate(lines) if ": starting on cpu" in ln]
    first_end = min(i for i, ln in enumerate(lines) if "finished on" in ln or "FAILED" in ln)
    assert len([i for i in starts if i < first_end]) == 2
    assert len(starts) == 4
    assert any(" runs ended; running: " in ln for ln in lines)  # progress while the workers train


def test_finished_runs_are_skipped_without_a_process(tmp_path: Path) -> None:
    lines: list[str] = []
    outcomes = run_parallel([job("done", "unused", tmp_path, action="skip")], ["cpu"], say=lines.append)
    assert outcomes == [] and lines == ["[suite] done: done, skipped"]
    assert not (tmp_path / "done").exists()


def test_device_lists_are_checked() -> None:
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    for text, message in [("", "give GPU indices"), ("cpu,0", "not both"), ("gpu0", "not both")]:
        with pytest.raises(RabenchError, match=message):
            parse_devices(text)
    env = worker_env("cpu", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and int(env["OMP_NUM_THREADS"]) >= 1
    assert worker_env("3", 4)["CUDA_VISIBLE_DEVICES"] == "3"


def test_gpu_devices_without_a_gpu_is_one_line(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["suite", "--out", str(tmp_path / "s"), "--devices", "0,1", "--data", "x"]) == 2
    err = capsys.readouterr().err
    assert "PyTorch sees no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_suite_with_cpu_workers_end_to_end(data_dir: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "suite"
    argv = ["suite", "--out", str(out), "--data", data_dir, "--attn", "sdpa,std-gated", "--preset", "tiny",
            "--iters", "6", "--calib-steps", "2", "--calib-windows", "2", "--devices", "cpu,cpu",
            "--batch-size", "2", "--seq-len", "16", "--eval-every", "3", "--eval-batches", "1", "--no-progress"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir() if (p / "config.json").exists())
    assert names == ["sdpa-s0", "std-gated-isotime-s0", "std-gated-s0"]
    for name in names:
        assert RunFolder(out / name).state() == "finished"
        assert (out / name / "train.log").is_file()
        assert "RuntimeWarning" not in (out / name / "train.log").read_text()  # runpy's, see suite/worker.py
        assert json.loads((out / name / "config.json").read_text())["device"] == "cpu"
    # a fresh calibration ran in a worker on the first slot while the runs that need no step
    # ratio (sdpa's, std-gated's iso-iteration run) started on the other; the iso-time run waited
    lines = capsys.readouterr().out.splitlines()
    at = {key: next(i for i, ln in enumerate(lines) if key in ln)
          for key in ("calibration: running on cpu", "sdpa-s0: starting", "s = ", "std-gated-isotime-s0: starting")}
    assert at["calibration: running on cpu"] < at["sdpa-s0: starting"] < at["s = "] < at["std-gated-isotime-s0: starting"]
    assert (out / "calibration.log").is_file() and not (out / "calibration.measuring.json").exists()
    assert "RuntimeWarning" not in (out / "calibration.log").read_text()
    ratio = json.loads((out / "calibration.json").read_text())["configs"]["std-gated"]["ratio"]
    iso = json.loads((out / "std-gated-isotime-s0" / "config.json").read_text())
    assert iso["max_iters"] == max(1, round(6 / ratio)) and iso["labels"]["step_ratio"] == ratio
    assert [r["name"] for r in json.loads((out / "suite.json").read_text())["runs"]] == [
        "sdpa-s0", "std-gated-s0", "std-gated-isotime-s0"]
    assert main(argv) == 0  # resumable: everything finished is skipped
    again = capsys.readouterr().out
    assert "reused from calibration.json" in again and again.count("done, skipped") == 3


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sigkill"])
def test_stopping_the_suite_checkpoints_every_worker(data_dir: str, tmp_path: Path, how: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "suite"
    argv = [sys.executable, "-m", "rabench", "suite", "--out", str(out), "--data", data_dir, "--attn", "sdpa",
            "--seeds", "0,1", "--preset", "tiny", "--iters", "1000000", "--calib-steps", "1", "--calib-windows", "2",
            "--devices", "cpu,cpu", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1000000",
            "--eval-batches", "1", "--log-every", "5", "--ckpt-every", "1h"]
    # SIGINT as a terminal's process has it: a pytest started in the background by a
    # non-interactive shell ignores SIGINT, the suite would inherit that, and Ctrl-C would do nothing
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not all(
                any(r.get("iter", 0) > 0 for r in RunFolder(out / f"sdpa-s{s}").metrics()) for s in (0, 1)):
            time.sleep(0.5)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)  # what SLURM or `timeout` sends
        elif how == "ctrl-c":  # a terminal's Ctrl-C signals the suite's whole process group; workers have their own
            os.killpg(proc.pid, signal.SIGINT)
        else:  # the suite dies at once (OOM killer, kill -9): its orphaned workers must stop by themselves
            proc.kill()
        _, err = proc.communicate(timeout=180)
        deadline = time.time() + 60
        while time.time() < deadline and not all(RunFolder(out / f"sdpa-s{s}").state() == "checkpointed" for s in (0, 1)):
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == "sigkill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 2
        assert "interrupted" in err and "run the same command to resume" in err
    for seed in (0, 1):  # both workers saved a checkpoint on the way out, so the same command resumes them
        assert RunFolder(out / f"sdpa-s{seed}").state() == "checkpointed"


def test_worker_gpu_follows_the_parents_visible_devices() -> None:
    from rabench.suite.parallel import physical_gpu

    assert physical_gpu("0", None) == "0"
    assert physical_gpu("1", "") == "1"
    assert physical_gpu("0", "3") == "3"
    assert physical_gpu("1", "2,3") == "3"
    assert physical_gpu("0", "GPU-abc,GPU-def") == "GPU-abc"


def sleeper(seconds: float, code: int = 0):
    """A SlotTask launcher whose process sleeps, then exits with `code`."""
    import subprocess
    import sys

    return lambda device: subprocess.Popen([sys.executable, "-c", f"import sys, time; time.sleep({seconds}); sys.exit({code})"])


@pytest.mark.slow
def test_a_slot_task_holds_the_first_slot_and_queues_the_jobs_it_returns(data_dir: str, tmp_path: Path) -> None:
    from rabench.suite.parallel import SlotTask

    later = job("later", data_dir, tmp_path)
    seen: list[int] = []
    task = SlotTask("calibration", sleeper(0.5), lambda code: seen.append(code) or [later])
    lines: list[str] = []
    outcomes = run_parallel([job("early", data_dir, tmp_path)], ["cpu", "cpu"], say=lines.append, first=task)
    assert seen == [0] and sorted(o.name for o in outcomes) == ["early", "later"]
    assert lines[0].startswith("[suite] calibration: running on cpu")
    assert "early: starting on cpu" in lines[1]  # at once, on the other slot
    assert RunFolder(tmp_path / "later").state() == "finished"


def test_a_failed_slot_task_is_one_error_and_nothing_it_sized_runs(tmp_path: Path) -> None:
    from rabench.suite.parallel import SlotTask

    def done(code: int) -> list:
        raise RabenchError(f"the step-time calibration failed (exit {code})")

    with pytest.raises(RabenchError, match=r"calibration failed \(exit 3\)"):
        run_parallel([], ["cpu", "cpu"], say=lambda *_: None, first=SlotTask("calibration", sleeper(0.1, 3), done))


def test_the_deadline_stops_a_slot_task_and_names_what_it_left(tmp_path: Path) -> None:
    from rabench.errors import DeadlineReached
    from rabench.suite.deadline import Deadline
    from rabench.suite.parallel import SlotTask

    task = SlotTask("calibration", sleeper(60), lambda code: pytest.fail("a stopped task queues nothing"))
    with pytest.raises(DeadlineReached, match="calibration and the runs it sizes"):
        run_parallel([], ["cpu", "cpu"], say=lambda *_: None, deadline=Deadline.after(0.5), first=task)


def test_the_worker_entry_point_refuses_an_unknown_kind_in_one_line(capsys) -> None:
    from rabench.suite.worker import main as worker

    assert worker(["bogus"]) == 2 and worker([]) == 2
    assert capsys.readouterr().err.count("\n") == 2
