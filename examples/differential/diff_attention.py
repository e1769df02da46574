"""Differential attention (Ye et al., "Differential Transformer", ICLR 2025), as a rabench plug-in.

    A1 = softmax(Q1 K1^T / sqrt(d)),  A2 = softmax(Q2 K2^T / sqrt(d))          (causal)
    DiffAttn = (A1 - lambda A2) V
    lambda   = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init
    lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)),   l = 1..L the layer's depth
    head out = (1 - lambda_init) RMSNorm(DiffAttn)                               (per head)

The four lambda vectors (length d, drawn from N(0, 0.1^2) as in the paper's code) are shared by
the heads of a layer; the per-head RMSNorm has a learned gain (ones at start).

Adaptation to rabench's fixed block: rabench holds everything outside the attention core
fixed, so the core receives the usual per-head q, k, v of head dim D (the paper instead halves
the number of heads and gives each a 2d-wide V). Here each head's q and k are split into two
halves of d = D/2 (Q1 | Q2, K1 | K2) and V keeps its D. Parameters: 4 d + D per layer.

The two maps go through F.scaled_dot_product_attention (its default scale is 1/sqrt(d) for
d-wide queries), so the core costs about two attentions of half width plus a norm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rabench.attention import AttentionCore, AttentionSpec, masked_softmax_apply

LAMBDA_STD = 0.1
NORM_EPS = 1e-5


def lambda_init(layer_idx: int) -> float:
    """0.8 - 0.6 exp(-0.3 (l - 1)) for depth l = layer_idx + 1."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


class DiffAttention(AttentionCore):
    """Differential attention: two softmax maps subtracted with a learned lambda (Differential Transformer)"""

    role = "candidate"

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        if spec.head_dim % 2:
            raise ValueError(f"differential attention splits the head dim in two; {spec.head_dim} is odd")
        half = spec.head_dim // 2
        self.lambda_init = lambda_init(spec.layer_idx)
        # drawn the usual way: rabench builds each core under a (seed, layer) RNG, so these are paired
        self.lambda_q1 = nn.Parameter(torch.randn(half) * LAMBDA_STD)
        self.lambda_k1 = nn.Parameter(torch.randn(half) * LAMBDA_STD)
        self.lambda_q2 = nn.Parameter(torch.randn(half) * LAMBDA_STD)
        self.lambda_k2 = nn.Parameter(torch.randn(half) * LAMBDA_STD)
        self.norm_weight = nn.Parameter(torch.ones(spec.head_dim))

    def lam(self) -> Tensor:
        return (torch.exp(torch.dot(self.lambda_q1, self.lambda_k1)) - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
                + self.lambda_init)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        q1, q2 = q.chunk(2, dim=-1)
        k1, k2 = k.chunk(2, dim=-1)
        a1v = F.scaled_dot_product_attention(q1, k1, v, is_causal=True)
        a2v = F.scaled_dot_product_attention(q2, k2, v, is_causal=True)
        out = a1v - self.lam().to(a1v.dtype) * a2v
        out = F.rms_norm(out.float(), (out.shape[-1],), self.norm_weight.float(), NORM_EPS)
        return ((1 - self.lambda_init) * out).to(v.dtype)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The paper's formula written out (rabench check runs it in float64)."""
        d = q.shape[-1] // 2
        q1, q2, k1, k2 = q[..., :d], q[..., d:], k[..., :d], k[..., d:]
        a1v = masked_softmax_apply(q1 @ k1.transpose(-2, -1) / math.sqrt(d), v)
        a2v = masked_softmax_apply(q2 @ k2.transpose(-2, -1) / math.sqrt(d), v)
        lam = (torch.exp((self.lambda_q1 * self.lambda_k1).sum()) - torch.exp((self.lambda_q2 * self.lambda_k2).sum())
               + self.lambda_init)
        out = a1v - lam * a2v
        out = out / torch.sqrt(out.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.norm_weight
        return (1 - self.lambda_init) * out
