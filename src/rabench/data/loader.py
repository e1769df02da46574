"""Reading prepared data: memory-mapped splits and a deterministic batch sampler.

Batches depend only on (seed, step) and never on how many processes or
accumulation steps share them, so every configuration in a comparison trains on
the same sequences in the same order and a resumed run picks up exactly where it
stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rabench.data.meta import META_FILE, load_meta
from rabench.data.shards import open_shard
from rabench.errors import RabenchError, SettingError


@dataclass(frozen=True)
class DocumentIndex:
    """Where each document of a split starts and which source it came from."""

    starts: np.ndarray  # (documents,) int64, increasing offsets in the split
    source_ids: np.ndarray  # (documents,) int64, indexes into names
    names: list[str]

    def token_sources(self, positions: np.ndarray) -> np.ndarray:
        """Source id of the document holding each token position (same shape as positions)."""
        doc = np.searchsorted(self.starts, positions, side="right") - 1
        return self.source_ids[np.clip(doc, 0, None)]


class TokenSplit:
    """All shards of one split as a single read-only token sequence."""

    def __init__(self, data_dir: str | Path, split: str):
        self.data_dir = Path(data_dir)
        self.split = split
        meta = load_meta(self.data_dir)
        splits = meta.get("splits", {})
        if split not in splits:
            raise RabenchError(f"{self.data_dir / META_FILE} has no split {split!r} (it has {', '.join(splits)})")
        self.shard_files = [self.data_dir / entry["file"] for entry in splits[split]["shards"]]
        self.shards = [self._open(entry) for entry in splits[split]["shards"]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])  # shard i spans offsets[i]:offsets[i+1]
        self._index_entry = splits[split].get("documents_index")
        self._source_names = list(meta.get("source_names") or [])

    def documents(self) -> DocumentIndex | None:
        """The split's document index, or None for data prepared before prepare recorded sources."""
        if not self._index_entry or not self._source_names:
            return None
        path = self.data_dir / self._index_entry["file"]
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RabenchError(f"cannot read document index {path} ({e}); re-run `rabench prepare` (with --overwrite)") from None
        ok = rows.ndim == 2 and rows.shape[1] == 2 and (len(rows) == 0 or (
            rows[0, 0] == 0 and np.all(np.diff(rows[:, 0]) >= 0) and rows[:, 0].max() < max(1, len(self))
            and rows[:, 1].min() >= 0 and rows[:, 1].max() < len(self._source_names)))
        if not ok:
            raise RabenchError(f"corrupt document index {path}; re-run `rabench prepare` (with --overwrite)")
        return DocumentIndex(rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), self._source_names)

    def _open(self, entry: dict[str, Any]) -> np.ndarray:
        path = self.data_dir / entry["file"]
        tokens = open_shard(path)
        if len(tokens) != entry["tokens"]:
            raise RabenchError(
                f"corrupt shard {path}: {len(tokens)} tokens but {META_FILE} lists {entry['tokens']}; "
                "re-run `rabench prepare` (with --overwrite)"
            )
        return tokens

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) as uint16, stitched across shard boundaries."""
        if start < 0 or n < 0 or start + n > len(self):
            raise IndexError(f"window [{start}, {start + n}) outside the {self.split} split of {len(self)} tokens")
        pieces = []
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while n > 0:
            local = start - int(self.offsets[shard])
            piece = self.shards[shard][local : local + n]
            pieces.append(piece)
            start += len(piece)
            n -= len(piece)
            shard += 1
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint16)

    def __repr__(self) -> str:
        return f"TokenSplit({str(self.data_dir)!r}, {self.split!r}: {len(self)} tokens in {len(self.shards)} shards)"


def check_split_fits(split: TokenSplit, batch_size: int, seq_len: int) -> None:
    """Fail early, with advice, when a split cannot fill even one batch."""
    needed = batch_size * seq_len + 1  # +1: the targets are the inputs shifted by one
    if len(split) < needed:
        raise RabenchError(
            f"the {split.split} split of {split.data_dir} has {len(split)} tokens but one batch needs {needed} "
            f"(batch_size {batch_size} x seq_len {seq_len} + 1); use a smaller --batch-size/--seq-len or more data"
        )


def step_batch_bytes(batch_size: int, seq_len: int, accum: int, world_size: int = 1) -> int:
    """Host bytes of one optimizer step's batches: the trainer builds every micro-batch's inputs and
    targets (int64) at once, from window starts drawn for all ranks and micro-batches."""
    return batch_size * accum * (2 * 8 * seq_len + 8 * world_size)


def machine_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_step_fits_memory(batch_size: int, seq_len: int, accum: int, world_size: int = 1,
                           memory_bytes: int | None = None) -> None:
    """Refuse a step whose batches alone would take over half the machine's memory (a huge grad_accum),
    rather than die in an allocation deep in the sampler."""
    memory = machine_memory_bytes() if memory_bytes is None else memory_bytes
    need = step_batch_bytes(batch_size, seq_len, accum, world_size)
    if need > memory // 2:
        raise SettingError("grad_accum", f"grad_accum {accum}: one step would hold {need / 2**30:.1f} GiB of batches "
                           f"(batch_size {batch_size} x seq_len {seq_len} x {accum} micro-batches), more than half of "
                           f"this machine's {memory / 2**30:.1f} GiB; use a smaller grad_accum or batch_size")


def train_batch(
    split: TokenSplit,
    seed: int,
    step: int,
    batch_size: int,
    seq_len: int,
    micro: int = 0,
    accum: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (int64, (batch_size, seq_len)) of one micro-batch of one step.

    Each step draws batch_size * world_size * accum random windows from a
    generator seeded by (seed, step); micro-batch g = rank * accum + micro takes
    rows [g * batch_size, (g + 1) * batch_size). Hence N ranks with accumulation A
    see the same rows as one rank with accumulation N * A.
    """
    if not 0 <= micro < accum:
        raise ValueError(f"micro {micro} must lie in [0, accum={accum})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    check_split_fits(split, batch_size, seq_len)
    starts = step_offsets(len(split), seed, step, batch_size * world_size * accum, seq_len)
    group = rank * accum + micro
    mine = starts[group * batch_size : (group + 1) * batch_size]
    rows = np.stack([split.window(int(s), seq_len + 1) for s in mine]).astype(np.int64)
    return _inputs_and_targets(rows)


def step_batches(split: TokenSplit, seed: int, step: int, batch_size: int, seq_len: int, accum: int,
                 device: torch.device, rank: int = 0, world_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One optimizer step's micro-batches on `device`: the trainer and the step-time calibration
    both load through here, so a calibrated step reads its data as a training step does."""
    out = []
    for micro in range(accum):
        x, y = train_batch(split, seed, step, batch_size, seq_len, micro=micro, accum=accum, rank=rank,
                           world_size=world_size)
        out.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
    return out


def step_offsets(n_tokens: int, seed: int, step: int, count: int, seq_len: int) -> np.ndarray:
    """The window starts of one step, uniform in [0, n_tokens - seq_len - 1], fixed by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - seq_len - 1, size=count, endpoint=True)


def _inputs_and_targets(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) token rows -> x = rows[:, :-1], y = rows[:, 1:], each contiguous int64."""
    rows = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
