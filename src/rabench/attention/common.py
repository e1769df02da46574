"""Small pieces the open-coded attentions share."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def causal_mask(t: int, device: torch.device) -> Tensor:
    """(T, T) bool, True where key j <= query i."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def masked_softmax_apply(logits: Tensor, v: Tensor) -> Tensor:
    """softmax over keys of causally masked logits (in float32 or better), then @ v."""
    t = logits.shape[-1]
    logits = logits.masked_fill(~causal_mask(t, logits.device), float("-inf"))
    probs = torch.softmax(upcast(logits), dim=-1)
    return probs.to(v.dtype) @ v


def score_scale(head_dim: int) -> float:
    """c = 1/sqrt(D)."""
    return 1.0 / math.sqrt(head_dim)


def upcast(t: Tensor) -> Tensor:
    """Half-precision tensors to float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
