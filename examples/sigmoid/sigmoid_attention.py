"""Sigmoid attention (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
Self-Attention", ICLR 2025), as a rabench plug-in.

    out_i = sum_{j <= i} sigmoid(q_i . k_j / sqrt(D) + b) v_j,     b = -log(n)

Each weight is an independent sigmoid instead of a row-normalised softmax. The bias b = -log(n),
with n the sequence length, is the paper's remedy for the large initial attention norm: at the
start every weight is about 1/n, as softmax's would be. Following the paper's causal language
models, n is the training sequence length (the tensors' T), the same for every row.

Option qk_norm (default off): the paper also stabilises larger models with a norm on q and k
(LayerNorm without a gain here, applied per head). It lives inside the core, which receives q
and k. The paper's LayerScale acts on the residual branch outside the core, which rabench holds
fixed; it is not available.

Written out (Q K^T, a mask, a sigmoid, @ V), not fused: the weights are a (B, H, T, T) tensor,
so this costs what the open-coded softmax attention (`--attn open`) costs, not what
FlashSigmoid would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rabench.attention import AttentionCore, AttentionSpec, causal_mask, upcast


class SigmoidAttention(AttentionCore):
    """Sigmoid attention with bias -log(n) (Ramapuram et al. 2025), open-coded"""

    default_options = {"qk_norm": False}

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.qk_norm = spec.options["qk_norm"]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        t = q.shape[-2]
        if self.qk_norm:
            q, k = (F.layer_norm(z, (z.shape[-1],)) for z in (q, k))
        logits = upcast(q @ k.transpose(-2, -1)) * self.scale - math.log(t)
        weights = torch.sigmoid(logits).masked_fill(~causal_mask(t, q.device), 0.0)
        return weights.to(v.dtype) @ v

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The formula, one query row at a time (rabench check runs it in float64)."""
        t, d = q.shape[-2], q.shape[-1]
        if self.qk_norm:
            q, k = ((z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5)
                    for z in (q, k))
        rows = []
        for i in range(t):
            w = torch.sigmoid(q[..., i:i + 1, :] @ k[..., :i + 1, :].transpose(-2, -1) / math.sqrt(d) - math.log(t))
            rows.append(w @ v[..., :i + 1, :])
        return torch.cat(rows, dim=-2)
