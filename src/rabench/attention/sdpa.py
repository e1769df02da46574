"""Test 1: standard causal attention through PyTorch's fused kernel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import standard_definition
from rabench.attention.registry import register


@register("sdpa", "F.scaled_dot_product_attention, causal (the plan's Test 1, fused baseline)", family="standard")
class SDPAAttention(AttentionCore):
    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """Causal softmax(c q k^T) v, open-coded (rabench check's float64 oracle)."""
        return standard_definition(q, k, v, self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
