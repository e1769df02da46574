"""The fixed validation set and the evaluation of a model on it.

The val set is `n_tokens / seq_len` windows spread evenly over the WHOLE val split (one
per equal stratum, centred in it), so every source and every part of the split is
represented in proportion, and the set depends only on the split, seq_len, batch_size
and n_tokens: the same for every attention, seed and run. An evaluation returns the mean
loss, its standard error over sequences and, when `prepare` recorded each document's
source, the loss per source (each target token counts for the document it belongs to).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rabench.data import TokenSplit, check_split_fits
from rabench.errors import RabenchError
from rabench.training import distributed as dd
from rabench.training.distributed import DistInfo

@dataclass
class ValSet:
    """Fixed val batches, the same for every config."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    starts: np.ndarray  # (sequences,) each window's first token, as an offset in the val split
    source_names: list[str] = field(default_factory=list)  # empty when the data records no sources
    token_sources: list[torch.Tensor] = field(default_factory=list)  # per batch (B, T): source id of each target

    @property
    def n_tokens(self) -> int:
        return sum(x.numel() for x, _ in self.batches)

    @property
    def n_sequences(self) -> int:
        return sum(x.shape[0] for x, _ in self.batches)


@dataclass
class EvalResult:
    loss: float
    se: float | None = None  # standard error of the mean over sequences (None for one sequence)
    by_source: dict[str, float] = field(default_factory=dict)


def val_window_starts(split_tokens: int, seq_len: int, n_sequences: int) -> np.ndarray:
    """Starts of n_sequences non-overlapping (seq_len + 1)-token windows spread evenly over the split.

    The split holds S = (split_tokens - 1) // seq_len window slots; window i takes the slot
    in the middle of the i-th of n_sequences equal strata of them.
    """
    slots = (split_tokens - 1) // seq_len
    if not 1 <= n_sequences <= slots:
        raise ValueError(f"n_sequences {n_sequences} outside [1, {slots}]")
    picks = ((2 * np.arange(n_sequences, dtype=np.int64) + 1) * slots) // (2 * n_sequences)
    return picks * seq_len


def build_val_set(split: TokenSplit, batch_size: int, seq_len: int, n_tokens: int | None) -> ValSet:
    """About n_tokens input tokens (None: the whole split) in whole batches, spread over the whole split."""
    check_split_fits(split, batch_size, seq_len)
    if n_tokens is not None and n_tokens < 1:
        raise RabenchError(f"eval_tokens must be at least 1, got {n_tokens}")
    slots = (len(split) - 1) // seq_len
    wanted = slots if n_tokens is None else min(slots, max(1, n_tokens // seq_len))
    n_seq = max(batch_size, wanted - wanted % batch_size)  # whole batches: one shape for every forward
    starts = val_window_starts(len(split), seq_len, n_seq)
    rows = np.stack([split.window(int(s), seq_len + 1) for s in starts]).astype(np.int64)
    rows_t = torch.from_numpy(rows)
    batches = [(rows_t[b : b + batch_size, :-1].contiguous(), rows_t[b : b + batch_size, 1:].contiguous())
               for b in range(0, n_seq, batch_size)]
    docs = split.documents()
    if docs is None:
        return ValSet(batches, starts)
    target_positions = starts[:, None] + 1 + np.arange(seq_len)[None, :]  # y[:, t] is token start + 1 + t
    sources = torch.from_numpy(docs.token_sources(target_positions))
    token_sources = [sources[b : b + batch_size].contiguous() for b in range(0, n_seq, batch_size)]
    return ValSet(batches, starts, list(docs.names), token_sources)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_set: ValSet, device: torch.device,
             autocast_ctx: AbstractContextManager, dist: DistInfo) -> EvalResult:
    """Loss over the val set, its standard error and per-source losses; equal on every rank.

    Under DDP each rank evaluates every world_size-th batch; the per-sequence numbers are
    gathered and reduced in sequence order on every rank, so the result is a single
    process's, bit for bit. One host sync per evaluation, at the end.
    """
    was_training = model.training
    model.eval()
    n_src = len(val_set.source_names) if val_set.token_sources else 0
    mine: list[tuple[int, torch.Tensor]] = []  # (first sequence, (B, 1 + 2 n_src) rows) per batch of this rank
    first = 0
    for i, (x, y) in enumerate(val_set.batches):
        if i % dist.world_size == dist.rank:
            with autocast_ctx:
                logits, _ = model(x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            tok = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(y.shape).double()
            mine.append((first, sequence_rows(tok, val_set.token_sources[i].to(device) if n_src else None, n_src)))
        first += x.shape[0]
    model.train(was_training)
    width = 1 + 2 * n_src
    values: dict[int, float] = {}
    for start, rows in mine:
        for j, v in enumerate(rows.cpu().flatten().tolist()):
            values[start * width + j] = v
    table = np.array(dd.gather_indexed(values, val_set.n_sequences * width, dist, device)).reshape(-1, width)
    return summarise(table, val_set.source_names if n_src else [])


def sequence_rows(token_losses: torch.Tensor, token_sources: torch.Tensor | None, n_src: int) -> torch.Tensor:
    """(B, T) token losses -> (B, 1 + 2 n_src): mean loss, then per source the loss sum and the token count."""
    mean = token_losses.mean(dim=1, keepdim=True)
    if token_sources is None:
        return mean
    b = token_losses.shape[0]
    sums = torch.zeros(b, n_src, dtype=token_losses.dtype, device=token_losses.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, token_sources, token_losses)
    counts.scatter_add_(1, token_sources, torch.ones_like(token_losses))
    return torch.cat([mean, sums, counts], dim=1)


def summarise(table: np.ndarray, source_names: list[str]) -> EvalResult:
    """Mean and standard error of the per-sequence losses (column 0); per-source token means."""
    per_seq = table[:, 0]
    n = len(per_seq)
    se = float(per_seq.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    by_source: dict[str, float] = {}
    if source_names:
        k = len(source_names)
        sums, counts = table[:, 1 : 1 + k].sum(axis=0), table[:, 1 + k :].sum(axis=0)
        by_source = {name: float(sums[s] / counts[s]) for s, name in enumerate(source_names) if counts[s] > 0}
    return EvalResult(float(per_seq.mean()), se, by_source)
