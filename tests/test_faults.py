"""kill -9 at several moments, then `--resume`: nothing but the work since the last checkpoint is lost.

The trainer's RABENCH_FAULT hook makes the process SIGKILL itself at an exact moment (after
a given step, inside an evaluation, inside a checkpoint write). The resumed metrics.jsonl
must equal an uninterrupted run's record for record, timing fields apart. CPU, tiny preset.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rabench.rundir import CHECKPOINT_NAME, RunFolder

pytestmark = pytest.mark.slow
TIMING = {"train_time_s", "wall_time_s", "ms_per_iter", "tokens_per_s", "peak_mem_gb",
          "run_id"}  # and the run's identity: two runs differ in it
ARGS = ["train", "--attn", "sdpa", "--preset", "tiny", "--batch-size", "4", "--seq-len", "32", "--eval-every", "4",
        "--log-every", "2", "--eval-batches", "2", "--warmup-iters", "2", "--iters", "10", "--ckpt-every", "2it",
        "--no-progress", "--device", "cpu"]


def rabench(args: list[str], fault: str | None = None, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`rabench ARGS` in a child; max_file_bytes caps the size of any file it writes (`ulimit -f`), the
    unprivileged stand-in for a full disk: a write past it fails with EFBIG (SIGXFSZ ignored)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "RABENCH_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if fault:
        env["RABENCH_FAULT"] = fault

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "rabench", *args], capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=limit_file_size if max_file_bytes else None)


def said(proc: subprocess.CompletedProcess) -> list[str]:
    """What rabench itself wrote on stderr (progress bars aside), after checking for a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("rabench:")]


def checkpoint_iter(run: Path) -> int:
    import torch

    return torch.load(run / CHECKPOINT_NAME, weights_only=False)["state"]["iter"]


def untimed(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunFolder(run).metrics()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from rabench.data import prepare

    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    prepare(["austen"], data, max_tokens=60_000, workers=1, progress=False)
    full = root / "full"
    proc = rabench([*ARGS, "--data", str(data), "--out", str(full)])
    assert proc.returncode == 0, proc.stderr
    return data, full


@pytest.mark.parametrize("fault", ["step@1", "step@7", "eval@8", "ckpt@6"])
def test_kill_9_then_resume_gives_the_uninterrupted_records(setup, tmp_path: Path, fault: str) -> None:
    data, full = setup
    run = tmp_path / "run"
    killed = rabench([*ARGS, "--data", str(data), "--out", str(run)], fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = RunFolder(run)
    assert folder.state() == ("started" if fault == "step@1" else "checkpointed")
    if fault.startswith("ckpt"):
        assert (run / (CHECKPOINT_NAME + ".tmp")).exists()  # killed mid-write: ckpt.pt is still the iter-4 one
    resumed = rabench([*ARGS, "--data", str(data), "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    if fault == "step@1":
        assert "before its first checkpoint" in resumed.stderr  # said, not silent
    assert untimed(run) == untimed(full)
    assert folder.state() == "finished" and not (run / (CHECKPOINT_NAME + ".tmp")).exists()
    assert folder.summary()["ms_per_iter"] is not None


def test_a_second_ctrl_c_during_the_save_keeps_the_last_checkpoint(setup, tmp_path: Path) -> None:
    """Ctrl-C at iter 5 asks for a checkpoint; a second one lands inside that save. One line, exit 130,
    the iter-4 checkpoint intact, no .tmp, and --resume gives the uninterrupted records."""
    data, full = setup
    run = tmp_path / "run"
    stopped = rabench([*ARGS, "--data", str(data), "--out", str(run)], fault="step@5:INT,ckpt@5:INT")
    assert stopped.returncode == 130, stopped.stderr
    lines = said(stopped)
    assert len(lines) == 1 and "second signal" in lines[0] and "--resume continues" in lines[0], stopped.stderr
    assert checkpoint_iter(run) == 4 and not (run / (CHECKPOINT_NAME + ".tmp")).exists()
    assert RunFolder(run).state() == "checkpointed"
    resumed = rabench([*ARGS, "--data", str(data), "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert untimed(run) == untimed(full)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(setup, tmp_path: Path) -> None:
    """A resumed run whose next checkpoint cannot be written (file-size limit): one line, exit 2, the
    last good checkpoint and its records kept; the same command without the limit then finishes."""
    data, full = setup
    run = tmp_path / "run"
    args = [*ARGS, "--data", str(data), "--out", str(run)]
    assert rabench(args, fault="step@3:TERM").returncode == 128 + signal.SIGTERM
    assert checkpoint_iter(run) == 3
    limit = (run / CHECKPOINT_NAME).stat().st_size // 2  # room for config, metrics, summary; not a checkpoint
    cut = rabench([*args, "--resume"], max_file_bytes=limit)
    assert cut.returncode == 2, cut.stderr
    lines = said(cut)
    assert len(lines) == 1 and lines[0].startswith("rabench: error: cannot write checkpoint"), cut.stderr
    assert "last good checkpoint is kept" in lines[0]
    assert checkpoint_iter(run) == 3 and not (run / (CHECKPOINT_NAME + ".tmp")).exists()
    assert RunFolder(run).state() == "failed" and RunFolder(run).has_checkpoint()
    resumed = rabench([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert untimed(run) == untimed(full)


def test_a_second_trainer_on_the_folder_is_refused_and_the_first_finishes(setup, tmp_path: Path, capsys) -> None:
    """The second `rabench train` on one --out is refused in one line, before it does any work, and
    the first goes on to finish its run, every record and the checkpoint its own."""
    import time

    from rabench.cli import main

    data, _ = setup
    run = tmp_path / "run"
    args = [*ARGS, "--iters", "40", "--data", str(data), "--out", str(run)]  # the last --iters counts
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "RABENCH_FAULT")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    first = subprocess.Popen([sys.executable, "-m", "rabench", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / "metrics.jsonl").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before the second could try"
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [f"rabench: error: another process is training in {run}; wait for it or choose "
                                    "another --out"]
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    folder = RunFolder(run)
    assert folder.state() == "finished" and folder.summary()["iters"] == 40
    assert [r["iter"] for r in folder.metrics()][-1] == 40 and folder.metrics_with_skips()[1] == 0


def test_kill_9_during_an_overwrite_keeps_the_old_dataset(setup, tmp_path: Path) -> None:
    """prepare --overwrite killed while it tokenizes: every byte of the old dataset is where it was,
    the half-built one waits in a hidden folder that the next prepare names (and leaves alone)."""
    import shutil
    import time

    data, _ = setup
    old = tmp_path / "data"
    shutil.copytree(data, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "RABENCH_FAULT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-m", "rabench", "prepare", "austen", "--out", str(old), "--overwrite",
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(old.glob(".prepare-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "prepare ended before it could be killed"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert {p.name: p.read_bytes() for p in old.iterdir() if not p.name.startswith(".")} == before
    left = list(old.glob(".prepare-*"))
    assert len(left) == 1
    again = rabench(["prepare", "austen", "--out", str(old), "--overwrite", "--max-tokens", "20000", "--workers", "1"])
    assert again.returncode == 0, again.stderr
    assert f"{left[0]} was left by a prepare that was stopped" in again.stderr and left[0].exists()
