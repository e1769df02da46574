"""Test 2: standard attention written out: Q@K^T, mask, softmax, @V."""

from __future__ import annotations

from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.common import masked_softmax_apply
from rabench.attention.registry import register


@register("open", "standard attention open-coded: Q@K^T -> mask -> softmax -> @V (Test 2)", family="standard")
class OpenAttention(AttentionCore):
    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        scores = (q @ k.transpose(-2, -1)) * self.scale  # S_ij = c q_i.k_j
        return masked_softmax_apply(scores, v)
