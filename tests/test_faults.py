"""kill -9 at several moments, then `--resume`: nothing but the work since the last checkpoint is lost.

The trainer's RABENCH_FAULT hook makes the process SIGKILL itself at an exact moment (after
a given step, inside an evaluation, inside a checkpoint write). The resumed metrics.jsonl
must equal an uninterrupted run's record for record, timing fields apart. CPU, tiny preset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rabench.rundir import CHECKPOINT_NAME, RunFolder

pytestmark = pytest.mark.slow
TIMING = {"train_time_s", "wall_time_s", "ms_per_iter", "tokens_per_s", "peak_mem_gb"}
ARGS = ["train", "--attn", "sdpa", "--preset", "tiny", "--batch-size", "4", "--seq-len", "32", "--eval-every", "4",
        "--log-every", "2", "--eval-batches", "2", "--warmup-iters", "2", "--iters", "10", "--ckpt-every", "2it",
        "--no-progress", "--device", "cpu"]


def rabench(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "RABENCH_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if fault:
        env["RABENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "rabench", *args], capture_output=True, text=True, env=env, timeout=120)


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
