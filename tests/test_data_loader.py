"""Shards and the reading side: validation, windows, the deterministic sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rabench.data import (
    TokenSplit,
    check_split_fits,
    open_shard,
    prepare,
    read_shard_header,
    train_batch,
    write_shard,
)
from rabench.data.loader import step_offsets
from rabench.errors import RabenchError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Austen, 30k tokens, in shards of 4k so that windows cross shard boundaries."""
    out = tmp_path_factory.mktemp("data")
    prepare(["austen"], out, max_tokens=30_000, val_fraction=0.2, workers=1, shard_tokens=4_000, progress=False)
    return out


@pytest.fixture(scope="module")
def train(data_dir: Path) -> TokenSplit:
    return TokenSplit(data_dir, "train")


def all_tokens(split: TokenSplit) -> np.ndarray:
    return np.concatenate(split.shards)


# --- shards -------------------------------------------------------------------------------


def test_shard_round_trip(tmp_path: Path) -> None:
    tokens = np.array([50256, 0, 1, 65535, 31373], dtype=np.uint16)
    sha = write_shard(tmp_path / "s.bin", tokens)
    assert len(sha) == 64 and not (tmp_path / "s.bin.tmp").exists()
    assert read_shard_header(tmp_path / "s.bin") == 5
    assert np.array_equal(open_shard(tmp_path / "s.bin"), tokens)


def test_write_shard_rejects_ids_beyond_uint16(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_shard(tmp_path / "s.bin", np.array([70_000]))


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda b: b[:-2], "header promises 4 tokens"),  # truncated tokens
        (lambda b: b + b"\0\0", "header promises 4 tokens"),  # trailing bytes
        (lambda b: b[:100], "shorter than the 1024-byte header"),
        (lambda b: (1234).to_bytes(4, "little") + b[4:], "magic number 1234"),
        (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "version 7"),
    ],
    ids=["truncated", "too-long", "short-header", "bad-magic", "bad-version"],
)
def test_damaged_shard_is_named(tmp_path: Path, damage, pattern: str) -> None:
    path = tmp_path / "train_000000.bin"
    write_shard(path, np.arange(4, dtype=np.uint16))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RabenchError, match=pattern) as info:
        open_shard(path)
    message = str(info.value)
    assert f"corrupt shard {path}" in message and "rabench prepare" in message


def test_missing_shard_is_named(tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="missing shard .*nope.bin"):
        open_shard(tmp_path / "nope.bin")


# --- TokenSplit ------------------------------------------------------------------------------


def test_split_spans_its_shards(data_dir: Path, train: TokenSplit) -> None:
    meta = json.loads((data_dir / "meta.json").read_text())
    assert len(train) == meta["splits"]["train"]["tokens"]
    assert len(train.shards) == len(meta["splits"]["train"]["shards"]) > 2
    assert len(TokenSplit(data_dir, "val")) == meta["splits"]["val"]["tokens"]


def test_window_crosses_shard_boundaries(train: TokenSplit) -> None:
    tokens = all_tokens(train)
    for start, n in [(0, 10), (3_990, 20), (3_000, 9_000), (len(train) - 5, 5), (7, 0)]:
        assert np.array_equal(train.window(start, n), tokens[start : start + n])
    with pytest.raises(IndexError):
        train.window(len(train) - 3, 4)


def test_folder_without_meta(tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="is not a prepared data folder.*rabench prepare") as info:
        TokenSplit(tmp_path, "train")
    assert str(tmp_path) in str(info.value)


def test_unknown_split(data_dir: Path) -> None:
    with pytest.raises(RabenchError, match="no split 'test'"):
        TokenSplit(data_dir, "test")


def test_shard_shorter_than_meta_says(tmp_path: Path, data_dir: Path) -> None:
    for f in data_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "train_000001.bin"
    write_shard(shard, open_shard(shard)[:-1])  # a valid shard, but not the one meta.json lists
    with pytest.raises(RabenchError, match="corrupt shard .*train_000001.bin"):
        TokenSplit(tmp_path, "train")


def test_split_too_small(train: TokenSplit) -> None:
    check_split_fits(train, 4, 64)
    with pytest.raises(RabenchError) as info:
        check_split_fits(train, 64, 1024)
    message = str(info.value)
    assert "train split" in message and str(len(train)) in message and str(64 * 1024 + 1) in message
    assert "--batch-size" in message
    with pytest.raises(RabenchError, match="train split"):
        train_batch(train, seed=0, step=0, batch_size=64, seq_len=1024)


# --- sampler ------------------------------------------------------------------------------


def test_batch_shapes_and_shift(train: TokenSplit) -> None:
    x, y = train_batch(train, seed=1, step=0, batch_size=4, seq_len=32)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    tokens = all_tokens(train)
    starts = step_offsets(len(train), 1, 0, 4, 32)
    for row, start in zip(y, starts):
        assert row.tolist() == tokens[start + 1 : start + 33].tolist()


def test_sampler_is_keyed_by_seed_and_step(train: TokenSplit) -> None:
    x0, y0 = train_batch(train, seed=7, step=3, batch_size=4, seq_len=32)
    x1, y1 = train_batch(train, seed=7, step=3, batch_size=4, seq_len=32)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(x0, train_batch(train, seed=7, step=4, batch_size=4, seq_len=32)[0])
    assert not torch.equal(x0, train_batch(train, seed=8, step=3, batch_size=4, seq_len=32)[0])


def test_offsets_stay_in_range() -> None:
    starts = step_offsets(100, seed=0, step=0, count=10_000, seq_len=10)
    assert starts.min() == 0 and starts.max() == 100 - 10 - 1  # both ends reachable


def test_ranks_and_accumulation_share_rows(train: TokenSplit) -> None:
    common = {"seed": 5, "step": 11, "batch_size": 3, "seq_len": 16}
    two_ranks = [train_batch(train, **common, rank=r, world_size=2)[0] for r in range(2)]
    two_micro = [train_batch(train, **common, micro=m, accum=2)[0] for m in range(2)]
    for a, b in zip(two_ranks, two_micro):
        assert torch.equal(a, b)
    # 2 ranks x accum 2 is the same set of rows as 1 rank x accum 4, in order g = rank * accum + micro.
    four = [train_batch(train, **common, micro=m, accum=4)[0] for m in range(4)]
    grid = [train_batch(train, **common, rank=r, world_size=2, micro=m, accum=2)[0] for r in range(2) for m in range(2)]
    assert torch.equal(torch.cat(four), torch.cat(grid))
    assert len({tuple(row.tolist()) for row in torch.cat(four)}) == 12  # distinct rows, not repeats
    with pytest.raises(ValueError):
        train_batch(train, **common, micro=2, accum=2)
