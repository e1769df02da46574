"""rabench.rundir: the run-folder state machine, torn lines, atomic checkpoints and one-line disk errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from rabench.errors import RabenchError
from rabench.rundir import CHECKPOINT_NAME, RunFolder


def test_state_machine_follows_the_files(tmp_path: Path) -> None:
    f = RunFolder(tmp_path / "run")
    assert f.state() == "absent"
    f.lock()
    f.write_config({"attn": "sdpa", "run_id": "a"})
    assert f.state() == "created"
    f.open_metrics(keep_through_iter=None)
    f.append_metrics({"iter": 0, "val_loss": 10.0})
    assert f.state() == "started"
    f.save_checkpoint({"w": torch.ones(2)}, "a")
    assert f.state() == "checkpointed"
    f.write_summary({"status": "interrupted"})
    assert f.state() == "checkpointed"
    f.write_summary({"status": "failed"})
    assert f.state() == "failed"
    f.write_summary({"status": "finished"})
    assert f.state() == "finished"
    f.release()


def test_torn_last_line_is_dropped_and_resume_truncates_past_the_checkpoint(tmp_path: Path) -> None:
    f = RunFolder(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"iter": 0}\n{"iter": 5}\n{"iter": 10}\n{"iter": 1')
    assert [r["iter"] for r in f.metrics()] == [0, 5, 10]
    f.open_metrics(keep_through_iter=5)
    f.append_metrics({"iter": 6})
    f.close_metrics()
    assert [r["iter"] for r in f.metrics()] == [0, 5, 6]


def test_stale_tmp_is_removed_and_a_full_disk_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    f = RunFolder(tmp_path)
    (tmp_path / (CHECKPOINT_NAME + ".tmp")).write_bytes(b"x" * 1000)  # left by a kill during a save
    f.save_checkpoint({"w": torch.ones(3)}, "run1")
    assert not (tmp_path / (CHECKPOINT_NAME + ".tmp")).exists()
    real_save = torch.save

    def disk_full(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RabenchError, match="No space left on device.*disk is full.*last good checkpoint is kept"):
        f.save_checkpoint({"w": torch.zeros(3)}, "run1")
    monkeypatch.setattr(torch, "save", real_save)
    assert not (tmp_path / (CHECKPOINT_NAME + ".tmp")).exists()  # the retry will not trip over it
    assert torch.equal(f.load_checkpoint("run1")["w"], torch.ones(3))


def test_checkpoint_from_another_run_is_refused(tmp_path: Path) -> None:
    f = RunFolder(tmp_path)
    f.save_checkpoint({"w": torch.ones(1)}, "other-run")
    with pytest.raises(RabenchError, match="belongs to another run"):
        f.load_checkpoint("this-run")
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(RabenchError, match="cannot be read"):
        f.load_checkpoint("this-run")


def test_out_that_is_a_file_or_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RabenchError, match="is a file, not a folder"):
        RunFolder(tmp_path / "file").ensure_dir()
    with pytest.raises(RabenchError, match="cannot create run folder"):
        RunFolder(tmp_path / "file" / "run").ensure_dir()


def test_two_trainers_never_share_a_folder(tmp_path: Path) -> None:
    a, b = RunFolder(tmp_path), RunFolder(tmp_path)
    a.lock()
    with pytest.raises(RabenchError, match="another process is training"):
        b.lock()
    a.release()
    b.lock()
    b.release()


def test_start_over_removes_every_run_file(tmp_path: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "summary.json", "ckpt.pt", "ckpt.pt.tmp"):
        (tmp_path / name).write_text("{}")
    RunFolder(tmp_path).start_over()
    assert sorted(os.listdir(tmp_path)) == []
