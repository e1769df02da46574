"""A run's data regime: what it trained on, how many passes over the training split its
windows made, and how much of what it read it had read before.

The trainer draws training windows at uniformly random offsets, with replacement
(`rabench.data.loader.step_offsets`), so a run "passes over" its data in expectation only.
These numbers have one owner, this module: the trainer records `data_regime` in a run's
config.json and the report prints epochs and the repeated-token share beside every headline,
since a loss measured after text comes round again is partly a memorisation loss.
"""

from __future__ import annotations

import math
from typing import Any


def data_regime(meta: dict[str, Any]) -> dict[str, Any]:
    """The regime fields a run records, from a prepared folder's meta.json."""
    splits = meta.get("splits") or {}
    return {
        "sources": list(meta.get("sources") or []),
        "train_tokens": int((splits.get("train") or {}).get("tokens", 0)),
        "val_tokens": int((splits.get("val") or {}).get("tokens", 0)),
    }


def epochs(tokens_seen: int | float, train_tokens: int | float) -> float:
    """Training tokens read, in units of the training split (nan when the split is unknown)."""
    return tokens_seen / train_tokens if train_tokens > 0 else math.nan


def repeated_token_share(n_epochs: float) -> float:
    """Expected share of the tokens read that had been read before, for windows drawn uniformly
    with replacement at `n_epochs` passes: each position is covered a Poisson(x) number of times,
    so the distinct share of the x * n tokens read is (1 - e^-x) / x, and the rest repeats.
    (0.25 at x = 0.6, 0.48 at x = 1.5: the full corpus at 8,000 and 20,000 iterations.)"""
    if math.isnan(n_epochs):
        return math.nan
    if n_epochs <= 0:
        return 0.0
    return 1.0 - (1.0 - math.exp(-n_epochs)) / n_epochs
