"""The fixed validation set and the evaluation of a model on it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rabench.data import TokenSplit, val_batches


@dataclass
class ValSet:
    """Fixed val batches, the same for every config."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    sources: list[str] = field(default_factory=list)  # one per sequence, when the data records sources

    @property
    def n_tokens(self) -> int:
        return sum(x.numel() for x, _ in self.batches)


@dataclass
class EvalResult:
    loss: float
    se: float | None = None  # standard error of the mean over sequences
    by_source: dict[str, float] = field(default_factory=dict)


def build_val_set(split: TokenSplit, batch_size: int, seq_len: int, n_tokens: int) -> ValSet:
    return ValSet(val_batches(split, batch_size, seq_len, n_tokens))
