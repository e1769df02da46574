"""Bad input through the real CLI: one line on stderr, exit 2, never a traceback (issue 13, points 7 and 8)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rabench import __version__
from rabench.cli import build_parser, main
from rabench.data import prepare

SMALL = ["--attn", "sdpa", "--batch-size", "4", "--seq-len", "32", "--eval-batches", "1", "--warmup-iters", "1",
         "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "austen"
    prepare(["austen"], out, max_tokens=60_000, progress=False)
    return out


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], match: str, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("rabench: error: ") and match in last, err
    return last


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"rabench {__version__}"


@pytest.mark.parametrize("flags,match", [
    (["--iters", "5", "--lr", "-1"], "--lr must be a positive finite number"),
    (["--iters", "5", "--lr", "nan"], "lr must be a positive finite number"),
    (["--time", "nan"], "must be a positive, finite"),
    (["--time", "inf"], "must be a positive, finite"),
    (["--time", "0"], "must be a positive, finite"),
    (["--iters", "0"], "--iters must be at least 1"),
    (["--iters", "5", "--batch-size", "0"], "--batch-size must be an integer of at least 1"),
    (["--iters", "5", "--device", "tpu"], "device 'tpu'"),
    (["--iters", "5", "--ckpt-every", "0it"], "--ckpt-every '0it'"),
    (["--iters", "5", "--warmup-frac", "1"], "--warmup-frac must lie in"),
    (["--iters", "5", "--preset", "huge"], "--preset 'huge' is unknown"),
    ([], "give a budget"),
    (["--iters", "5", "--lr", "-1e-3"], "--lr must be a positive finite number, got -0.001"),  # not "expected one argument"
    (["--time", "-5m"], "--time: cannot read duration '-5m'"),
    (["--iters", "-3"], "--iters must be at least 1"),
    (["--iters", "5", "--seed", str(2**63)], "--seed must be at most 2**63 - 1"),
    (["--iters", "5", "--seq-len", "4096", "--preset", "tiny"], "--seq-len 4096 exceeds preset tiny's context"),
])
def test_train_rejects_bad_settings_in_one_line(capsys, data_dir: Path, tmp_path: Path, flags: list[str], match: str):
    one_line_error(capsys, ["train", *SMALL, "--data", str(data_dir), "--out", str(tmp_path / "r"), *flags], match)
    assert not (tmp_path / "r" / "config.json").exists()


def test_out_pointing_at_a_file_or_under_one(capsys, data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    base = ["train", *SMALL, "--data", str(data_dir), "--iters", "1", "--preset", "tiny"]
    one_line_error(capsys, [*base, "--out", str(tmp_path / "file")], "is a file, not a folder")
    one_line_error(capsys, [*base, "--out", str(tmp_path / "file" / "run")], "cannot create run folder")


def test_tokens_outside_gpt2_are_refused(capsys, data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    shard = bad / "train_000000.bin"
    tokens = np.memmap(shard, dtype="<u2", mode="r+", offset=1024)
    tokens[100] = 50300  # below the model's padded vocab (50304) but not a GPT-2 token
    tokens.flush()
    del tokens
    one_line_error(capsys, ["train", *SMALL, "--data", str(bad), "--out", str(tmp_path / "r"), "--iters", "1",
                            "--preset", "tiny"], "holds token id 50300")


def test_verify_checks_the_checksums(capsys, data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    shard = bad / "val_000000.bin"
    tokens = np.memmap(shard, dtype="<u2", mode="r+", offset=1024)
    tokens[5] = (int(tokens[5]) + 1) % 50000  # still a valid token: only the checksum can tell
    tokens.flush()
    del tokens
    one_line_error(capsys, ["train", *SMALL, "--data", str(bad), "--out", str(tmp_path / "r"), "--iters", "1",
                            "--preset", "tiny", "--verify"], "checksum mismatch")


def test_cpu_default_preset_notice_resume_rules_and_foreign_checkpoint(capsys, data_dir: Path, tmp_path: Path) -> None:
    run, other = tmp_path / "run", tmp_path / "other"
    assert main(["train", *SMALL, "--data", str(data_dir), "--out", str(run), "--iters", "2"]) == 0
    err = capsys.readouterr().err
    assert "using the CPU-sized preset tiny" in err or "gpt2" not in err  # a GPU machine keeps gpt2-124m
    one_line_error(capsys, ["train", *SMALL, "--data", str(data_dir), "--out", str(run), "--iters", "2", "--preset",
                            "tiny", "--resume", "--lr", "0.03"], "lr: 0.003 -> 0.03")
    assert main(["train", *SMALL, "--data", str(data_dir), "--out", str(other), "--iters", "2", "--preset", "tiny"]) == 0
    capsys.readouterr()
    shutil.copy(other / "ckpt.pt", run / "ckpt.pt")
    (run / "summary.json").unlink()  # as if interrupted: --resume must load the checkpoint
    one_line_error(capsys, ["train", *SMALL, "--data", str(data_dir), "--out", str(run), "--iters", "2", "--preset",
                            "tiny", "--resume"], "belongs to another run")


def test_resume_of_an_absent_run_says_it_starts_fresh_and_a_finished_run_is_not_offered_to_continue(
        capsys, data_dir: Path, tmp_path: Path) -> None:
    args = ["train", *SMALL, "--data", str(data_dir), "--out", str(tmp_path / "run"), "--iters", "2", "--preset", "tiny"]
    assert main([*args, "--resume"]) == 0
    assert "nothing to resume; starting a new run" in capsys.readouterr().err
    line = one_line_error(capsys, args, "already holds a finished run; pass --resume to read its summary")
    assert "continue" not in line  # a finished run cannot continue
    assert main([*args, "--resume"]) == 0
    assert "nothing to resume" not in capsys.readouterr().err


def test_demo_rejects_a_non_positive_length(capsys, tmp_path: Path) -> None:
    one_line_error(capsys, ["demo", "--iters", "0", "--out", str(tmp_path / "d")], "--iters")
    (tmp_path / "f").write_text("x")
    one_line_error(capsys, ["demo", "--out", str(tmp_path / "f")], "is a file")


def _actions(parser: argparse.ArgumentParser, path: str = "rabench"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


MINE = ("rabench", "rabench train", "rabench prepare", "rabench report", "rabench demo", "rabench attentions")


def test_every_flag_has_help() -> None:
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _actions(build_parser())
               if path in MINE and not a.help]
    assert missing == []


def test_train_flags_show_their_defaults() -> None:
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    lacking = [a.option_strings[0] for a in train._actions
               if a.option_strings and not a.required and a.help and "default" not in a.help
               and a.dest not in ("help", "resume", "until_plateau", "time", "iters")]
    assert lacking == []


def test_sigterm_checkpoints_and_exits_143_with_the_resume_hint(capsys, data_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["train", *SMALL, "--data", str(data_dir), "--out", str(tmp_path / "r"), "--iters", "6", "--preset", "tiny"]
    monkeypatch.setenv("RABENCH_FAULT", "step@2:TERM")
    assert main(args) == 143
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("rabench: SIGTERM at iter 2: checkpointed") and "--resume" in line
    monkeypatch.delenv("RABENCH_FAULT")
    assert main([*args, "--resume"]) == 0


def test_report_out_that_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    one_line_error(capsys, ["report", str(tmp_path), "--out", str(tmp_path / "f")], "is a file")


def test_an_os_error_anywhere_is_one_line(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk or a read-only place met deep inside any command: one line, exit 2."""
    import errno

    from rabench.commands import attentions

    def disk_full(_args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(attentions, "run", disk_full)
    one_line_error(capsys, ["attentions"], "No space left on device")


def test_bench_flags_show_their_defaults() -> None:
    bench = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["bench"]
    lacking = [a.option_strings[0] for a in bench._actions if a.option_strings and a.dest != "help"
               and "default" not in (a.help or "")]
    assert lacking == []


def test_a_bench_whose_every_row_fails_exits_2_and_a_cpu_says_it_is_cpu_sized(capsys, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import rabench.bench as bench

    def unsupported(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(bench, "attention_row", unsupported)
    monkeypatch.setattr(bench, "step_row", unsupported)
    out = tmp_path / "bench.json"
    assert main(["bench", "--attn", "sdpa", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("rabench: no GPU: a CPU-sized bench (--shape 2,4,128,32, --preset tiny, --compile no)")
    assert err[-1].startswith("rabench: error: every row failed (the first: RuntimeError: no kernel image")
    assert out.exists()  # the table of errors is still written, to be read row by row


def test_a_deadline_spent_before_the_runs_start_exits_124_not_130(tmp_path: Path) -> None:
    """An iso calibration longer than --deadline: no run starts, and the suite says so with exit 124
    (the deadline's timer used to fire at once and interrupt whatever ran: 'interrupted', exit 130)."""
    from types import SimpleNamespace

    from rabench.errors import DeadlineReached
    from rabench.suite.deadline import Deadline
    from rabench.suite.execute import run_sequential

    def job(attn: str) -> SimpleNamespace:
        cfg = SimpleNamespace(attn=attn, until_plateau=False, time_budget_s=None, max_iters=100, resume=False,
                              compile=False, out=str(tmp_path / f"{attn}-s0"))
        return SimpleNamespace(action="train", run=SimpleNamespace(name=f"{attn}-s0"), cfg=cfg)

    jobs = [job("sdpa"), job("ra-open")]
    with pytest.raises(DeadlineReached) as exc:
        run_sequential(jobs, lambda *_: None, Deadline.after(-1.0, {"sdpa": 10.0, "ra-open": 12.0}))
    assert exc.value.exit_code == 124 and "sdpa-s0, ra-open-s0" in str(exc.value)


def test_a_bench_cut_off_never_replaces_an_earlier_benchs_tables(capsys, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import rabench.bench as bench

    out = tmp_path / "bench.json"
    for path in (out, out.with_suffix(".txt"), out.with_suffix(".md")):
        path.write_text("an earlier, complete bench\n")

    def row(name, *args, **kwargs):
        return {"attn": name, "T": 16, "fwd_gpu_ms": 1.0, "fwd_host_ms": 1.0, "fwd_bwd_gpu_ms": 2.0,
                "fwd_bwd_host_ms": 2.0}

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "attention_row", row)
    monkeypatch.setattr(bench, "step_row", stopped)
    argv = ["bench", "--attn", "sdpa,ra-local", "--shape", "2,2,16,16", "--preset", "tiny", "--compile", "no",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 130
    assert all(p.read_text() == "an earlier, complete bench\n" for p in (out, out.with_suffix(".txt"), out.with_suffix(".md")))
    assert json.loads((tmp_path / "bench-partial.json").read_text())["rows"] == {"measured": 2, "planned": 4}
    assert "bench-partial.json" in capsys.readouterr().err
    monkeypatch.setattr(bench, "step_row", lambda name, *a, **k: {"attn": name, "T": 16, "compiled": "none",
                                                                   "ms_per_iter": 1.0, "tokens_per_s": 10})
    assert main(argv) == 0  # complete: it replaces the earlier tables, and nothing partial is left
    assert json.loads(out.read_text())["rows"] == {"measured": 4, "planned": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md", "bench.txt"]


@pytest.mark.parametrize("argv,flag", [
    (["suite", "--out", "{tmp}/s", "--seeds", ""], "--seeds"),
    (["suite", "--out", "{tmp}/s", "--selection-seeds", " "], "--selection-seeds"),
    (["suite", "--out", "{tmp}/s", "--preset", ""], "--preset"),
    (["suite", "", "--out", "{tmp}/s"], "PLAN"),
    (["suite", "--out", "{tmp}/s", "--deadline", ""], "--deadline"),
    (["train", "--attn", "sdpa", "--data", "{tmp}/d", "--out", "{tmp}/r", "--iters", "1", "--preset", ""], "--preset"),
    (["report", "{tmp}", "--out", ""], "--out"),
    (["report", ""], "FOLDER"),
    (["bench", "--attn", "sdpa", "--seq-lens", "", "--out", "{tmp}/b.json"], "--seq-lens"),
])
def test_an_empty_value_is_an_error_naming_its_flag_not_the_default(capsys, tmp_path: Path, argv: list[str],
                                                                    flag: str) -> None:
    """`--seeds "$SEEDS"` with SEEDS unset must not run the default plan (nor `report ""` the current folder)."""
    line = one_line_error(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], f"{flag} is empty")
    assert "unset shell variable" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was made


@pytest.mark.parametrize("out,match", [
    ("mine.txt", "name a .json file"),
    ("res.md", "name a .json file"),
    ("folder", "is a folder; name a .json file in it"),
    ("folder.json", "is a folder"),
    ("t.json", "the table path"),  # t.md is a folder
    ("s.json", "s.txt exist without s.json"),
    ("mine.txt/b.json", "cannot create its folder"),
])
def test_a_bench_out_that_cannot_hold_the_tables_is_refused_before_measuring(capsys, tmp_path: Path, out: str,
                                                                             match: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen: --out existing.txt replaced the user's file by the text table; --out res.md lost the JSON to the
    markdown; --out DIR measured everything, then failed with "Is a directory"."""
    import rabench.bench as bench

    def measured(*args, **kwargs):
        raise AssertionError("measured before --out was checked")

    monkeypatch.setattr(bench, "attention_row", measured)
    monkeypatch.setattr(bench, "step_row", measured)
    (tmp_path / "mine.txt").write_text("the user's notes\n")
    (tmp_path / "s.txt").write_text("the user's notes\n")
    for folder in ("folder", "folder.json", "t.md"):
        (tmp_path / folder).mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(capsys, ["bench", "--attn", "sdpa", "--device", "cpu", "--out", str(tmp_path / out)], match)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "mine.txt").read_text() == (tmp_path / "s.txt").read_text() == "the user's notes\n"
