"""Hostile and mistaken inputs, table-driven: each is refused in ONE line and changes nothing on disk.

Every case names a class of input a user (or a damaged folder) can hand rabench, the command
line, and a piece of the single `rabench: error:` line it must give (exit 2, no traceback).
Before and after, the whole scratch tree (prepared data, run folders, plan files) is
fingerprinted: a refused command must leave every byte where it was. Grow the table when a new
kind of bad input turns up. Commands run in-process (rabench.cli.main) to stay fast.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rabench.cli import main

TRAIN = ["train", "--attn", "sdpa", "--preset", "tiny", "--batch-size", "4", "--seq-len", "32", "--eval-batches", "1",
         "--warmup-iters", "1", "--no-progress", "--device", "cpu", "--data", "{data}"]
ERROR_LINE = re.compile(r"^rabench( [a-z]+)?: error: ")  # `rabench train: error:` when argparse refuses a flag
BENCH = ["bench", "--device", "cpu", "--out", "{tmp}/bench.json"]
LOCK = ".lock"  # the empty lock file a trainer opens before it may look at a folder: not data


@dataclass(frozen=True)
class Case:
    """One hostile input: `argv` with {data} (a prepared folder), {run} (a run folder) and {tmp}
    (the scratch root) filled in; `setup` prepares the scratch tree; `error` is part of the line."""

    name: str
    argv: list[str]
    error: str
    setup: Callable[[Path], None] | None = None
    code: int = 2


def run_files(*names: str, config: str | None = None) -> Callable[[Path], None]:
    """A run folder {tmp}/run holding `names` (stand-in bytes) and, if given, a config.json of that text."""
    def make(root: Path) -> None:
        run = root / "run"
        run.mkdir()
        for name in names:
            (run / name).write_bytes(b"not yours to delete")
        if config is not None:
            (run / "config.json").write_text(config)
    return make


def empty_source(root: Path) -> None:
    (root / "empty.txt").write_text("")


def edit_meta(root: Path, **fields: object) -> None:
    """The scratch copy of the prepared data with meta.json's top-level `fields` replaced."""
    path = root / "data" / "meta.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def ckpt_directory(root: Path) -> None:
    run_files(config='{"run_id": "abc"}')(root)
    (root / "run" / "ckpt.pt").mkdir()


CASES = [
    # ---- data loss: a failing overwrite, an unidentifiable run folder ----------------------------
    Case("prepare-overwrite-with-empty-source", ["prepare", "{tmp}/empty.txt", "--out", "{data}", "--overwrite",
                                                 "--workers", "1"], "is empty", setup=empty_source),
    Case("resume-ckpt-without-config", [*TRAIN, "--out", "{run}", "--iters", "2", "--resume"],
         "holds ckpt.pt but no config.json", setup=run_files("ckpt.pt")),
    Case("fresh-ckpt-without-config", [*TRAIN, "--out", "{run}", "--iters", "2"],
         "holds ckpt.pt, metrics.jsonl but no config.json", setup=run_files("ckpt.pt", "metrics.jsonl")),
    Case("resume-garbage-config", [*TRAIN, "--out", "{run}", "--iters", "2", "--resume"],
         "config.json cannot be read", setup=run_files("ckpt.pt", config="{not json")),
    Case("resume-config-not-an-object", [*TRAIN, "--out", "{run}", "--iters", "2", "--resume"],
         "config.json cannot be read", setup=run_files("ckpt.pt", config="[1, 2]")),
    Case("ckpt-is-a-directory", [*TRAIN, "--out", "{run}", "--iters", "2", "--resume"],
         "ckpt.pt is not a file", setup=ckpt_directory),
    # ---- train flags: the flag the user typed, bounds the code can honour --------------------------
    Case("train-out-empty", [*TRAIN, "--out", "", "--iters", "2"], "argument --out: an empty path"),
    Case("train-data-empty", ["train", "--attn", "sdpa", "--data", "", "--out", "{run}", "--iters", "2"],
         "argument --data: an empty path"),
    Case("train-seed-above-int64", [*TRAIN, "--out", "{run}", "--iters", "2", "--seed", "99999999999999999999999"],
         "--seed must be at most 2**63 - 1"),
    Case("train-negative-float", [*TRAIN, "--out", "{run}", "--iters", "2", "--lr", "-1e-3"],
         "--lr must be a positive finite number"),
    Case("train-negative-duration", [*TRAIN, "--out", "{run}", "--time", "-5m"], "--time: cannot read duration"),
    Case("train-field-named-as-flag", [*TRAIN, "--out", "{run}", "--iters", "2", "--warmup-frac", "2"],
         "--warmup-frac must lie in"),
    Case("train-eval-batches-not-an-integer", [*TRAIN, "--out", "{run}", "--iters", "2", "--eval-batches", "1e9"],
         "argument --eval-batches: invalid int value: '1e9'"),
    Case("train-grad-accum-beyond-memory", [*TRAIN, "--out", "{run}", "--iters", "2", "--grad-accum", "1000000000"],
         "--grad-accum 1000000000: one step would hold"),
    Case("attention-option-nan", [*TRAIN, "--out", "{run}", "--iters", "2", "--attn", "ra-sparse", "--attn-opt", "p=nan"],
         "option p must be a finite number, got nan"),
    Case("attention-option-beyond-memory", [*TRAIN, "--out", "{run}", "--iters", "2", "--attn", "ra-gated",
                                            "--attn-opt", "hidden=100000000000"], "parameters: with gradients and AdamW"),
    # ---- prepared data and prepare's own flags ----------------------------------------------------
    Case("meta-splits-of-the-wrong-type", [*TRAIN, "--out", "{run}", "--iters", "2"],
         "meta.json is malformed (splits is int", setup=lambda root: edit_meta(root, splits=5)),
    Case("meta-shard-entry-of-the-wrong-type", [*TRAIN, "--out", "{run}", "--iters", "2"],
         "meta.json is malformed (splits.train.shards holds", setup=lambda root: edit_meta(root, splits={
             "train": {"shards": ["train_000000.bin"]}, "val": {"shards": []}})),
    Case("meta-file-outside-the-folder", [*TRAIN, "--out", "{run}", "--iters", "2"],
         "names a file outside the folder", setup=lambda root: edit_meta(root, splits={
             "train": {"shards": [{"file": "../../etc/passwd", "tokens": 1, "sha256": "x"}]}})),
    Case("prepare-out-empty", ["prepare", "austen", "--out", ""], "argument --out: an empty path"),
    Case("prepare-workers-beyond-the-cores", ["prepare", "austen", "--out", "{tmp}/new", "--workers", "100000"],
         "workers must be at most"),
    # ---- bench: every argument checked before a row runs or a table is written ----------------------
    Case("bench-unknown-preset", [*BENCH, "--preset", "bogus"], "--preset 'bogus' is unknown"),
    Case("bench-empty-seq-lens", [*BENCH, "--seq-lens", ""], "--seq-lens is empty"),
    Case("bench-out-not-json", [*BENCH[:-2], "--out", "{tmp}/bench.md"], "bench.md: name a .json file"),
    Case("bench-nothing-to-measure", [*BENCH, "--no-steps", "--no-attention"], "leaves nothing to measure"),
    Case("bench-shape-beyond-memory", [*BENCH, "--shape", "100000,100000,100000,100000"],
         "--shape 100000,100000,100000,100000: an attention row at T=100000 needs about"),
    Case("bench-empty-attention-name", [*BENCH, "--attn", "sdpa,"], "give comma-separated attention names"),
]


def fingerprint(root: Path) -> dict[str, str]:
    """Every path under root -> 'dir' or its content's SHA-256 (the lock file aside)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.name != LOCK}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rabench.data import prepare

    out = tmp_path_factory.mktemp("hostile") / "data"
    prepare(["austen"], out, max_tokens=20_000, workers=1, progress=False)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_refused_in_one_line_and_nothing_changes(case: Case, prepared: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared, data)  # set-ups may damage the copy
    if case.setup is not None:
        case.setup(tmp_path)
    before = fingerprint(tmp_path)
    argv = [a.format(data=data, run=tmp_path / "run", tmp=tmp_path) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a flag by exiting
        code = exc.code
    assert code == case.code
    err = capsys.readouterr().err.strip()
    said = [line for line in err.splitlines() if line.startswith("rabench")]  # progress bars aside
    assert "Traceback" not in err
    assert len(said) == 1 and ERROR_LINE.match(said[0]) and case.error in said[0], err
    assert fingerprint(tmp_path) == before
