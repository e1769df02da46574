"""rabench.rundir: the run-folder state machine, torn lines, atomic checkpoints and one-line disk errors."""

from __future__ import annotations

import errno
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


def _fails_like_torch_save(error: BaseException):
    """torch.save into a file whose write raised `error`: what it does is raise a RuntimeError
    from inline_container.cc, the write's exception left as its context."""
    def save(obj, fh, *a, **k):
        fh.write(b"partial")
        try:
            raise error
        except BaseException:  # noqa: B904 - torch keeps the write's exception as the implicit context
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    return save


@pytest.mark.parametrize("wrapped", [False, True], ids=["oserror", "runtimeerror-from-torch"])
def test_stale_tmp_is_removed_and_a_full_disk_keeps_the_last_good_checkpoint(tmp_path: Path, wrapped: bool,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    f = RunFolder(tmp_path)
    (tmp_path / (CHECKPOINT_NAME + ".tmp")).write_bytes(b"x" * 1000)  # left by a kill during a save
    f.save_checkpoint({"w": torch.ones(3)}, "run1")
    assert not (tmp_path / (CHECKPOINT_NAME + ".tmp")).exists()
    full = OSError(errno.ENOSPC, "No space left on device")

    def disk_full(obj, fh, *a, **k):
        fh.write(b"partial")
        raise full

    monkeypatch.setattr(torch, "save", _fails_like_torch_save(full) if wrapped else disk_full)
    with pytest.raises(RabenchError, match="No space left on device.*disk is full.*last good checkpoint is kept"):
        f.save_checkpoint({"w": torch.zeros(3)}, "run1")
    monkeypatch.undo()
    assert not (tmp_path / (CHECKPOINT_NAME + ".tmp")).exists()  # the retry will not trip over it
    assert torch.equal(f.load_checkpoint("run1")["w"], torch.ones(3))


def test_a_save_cut_short_by_ctrl_c_raises_keyboardinterrupt_and_keeps_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = RunFolder(tmp_path)
    f.save_checkpoint({"w": torch.ones(3)}, "run1")
    monkeypatch.setattr(torch, "save", _fails_like_torch_save(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        f.save_checkpoint({"w": torch.zeros(3)}, "run1")
    monkeypatch.undo()
    assert not (tmp_path / (CHECKPOINT_NAME + ".tmp")).exists()
    assert torch.equal(f.load_checkpoint("run1")["w"], torch.ones(3))


def test_an_unexplained_save_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(obj, fh, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2\nmore\nlines")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RabenchError, match=r"cannot write checkpoint .*unexpected pos 1 vs 2$"):
        RunFolder(tmp_path).save_checkpoint({"w": torch.ones(1)}, "run1")


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


@pytest.mark.parametrize("files,config,match", [
    (("ckpt.pt",), None, "holds ckpt.pt but no config.json"),
    (("metrics.jsonl", "summary.json"), None, "holds metrics.jsonl, summary.json but no config.json"),
    (("ckpt.pt",), "{torn", "config.json cannot be read"),
    (("ckpt.pt",), '{"attn": "sdpa"}', "has no run_id"),
])
def test_run_files_that_config_json_cannot_vouch_for_are_refused(tmp_path: Path, files, config, match) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"work")
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    with pytest.raises(RabenchError, match=match):
        RunFolder(tmp_path).check_identity()
    assert all((tmp_path / name).read_bytes() == b"work" for name in files)


def test_an_identified_or_empty_folder_passes(tmp_path: Path) -> None:
    RunFolder(tmp_path / "absent").check_identity()
    (tmp_path / "config.json").write_text('{"run_id": "a"}')
    (tmp_path / "ckpt.pt").write_bytes(b"w")
    RunFolder(tmp_path).check_identity()


def test_metrics_skip_unreadable_lines_and_other_runs_records_and_say_how_many(tmp_path: Path) -> None:
    from rabench.analysis.runs import Run

    f = RunFolder(tmp_path)
    f.write_config({"attn": "sdpa", "run_id": "mine"})
    (tmp_path / "metrics.jsonl").write_bytes(
        b'{"iter": 0, "val_loss": 10.8}\n'  # written before records carried a run_id: kept
        b'\xff\xfe garbage \x00\n'  # not UTF-8
        b'{"iter": 2, "val_loss": 9.0, "run_id": "mine"}\n'
        b'{"iter": 2, "val_loss": 1.0, "run_id": "someone-else"}\n'  # a file copied in, a merged resume
        b'[1, 2]\n{"iter": 3, \n'  # not an object; not JSON
        b'{"iter": 4, "val_loss": 8.5, "run_id": "mine"}\n'
        b'{"iter": 5, "val_')  # torn by a kill: expected, not counted
    records, skipped = f.metrics_with_skips()
    assert [(r["iter"], r["val_loss"]) for r in records] == [(0, 10.8), (2, 9.0), (4, 8.5)]
    assert skipped == 4
    assert Run.read(tmp_path, "").skipped_records == 4
    # the caller's config.json (read once) decides which run's records are kept
    assert [r["iter"] for r in f.metrics_with_skips({"run_id": "someone-else"})[0]] == [0, 2]
    f.open_metrics(keep_through_iter=2)  # a resume: no UnicodeDecodeError, only this run's records stay
    f.append_metrics({"iter": 3, "run_id": "mine"})
    f.close_metrics()
    assert [r["iter"] for r in f.metrics()] == [0, 2, 3] and f.metrics_with_skips()[1] == 0
