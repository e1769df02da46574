"""Test 3: canonical RA, open-coded exactly as ra-math.md defines it.

    L_ij = w_std * S_ij + w_rec * S_ji + w_disc * d_j   (j <= i),  S = c Q K^T,  d_j = k_j . u
"""

from __future__ import annotations

from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.common import masked_softmax_apply, upcast
from rabench.attention.gates import RAGates, per_head
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


def ra_logits(q: Tensor, k: Tensor, gates: RAGates, scale: float) -> Tensor:
    """Unmasked RA logits (B, H, T, T) in float32 (or float64 for float64 inputs)."""
    w_std, w_rec, w_disc = gates.weights()
    scores = (q @ k.transpose(-2, -1)) * scale  # S_ij = c q_i.k_j
    scores = upcast(scores)
    d = gates.discoverability(k).to(scores.dtype)  # (B, H, T): d_j, a column bias
    return (
        per_head(w_std).to(scores.dtype) * scores
        + per_head(w_rec).to(scores.dtype) * scores.transpose(-2, -1)  # S^T_ij = S_ji: j's query meets i's key
        + per_head(w_disc).to(scores.dtype) * d.unsqueeze(-2)
    )


@register("ra-open", "RA open-coded: w_std*S + w_rec*S^T + w_disc*d, causal (Test 3)", family="ra")
class RAOpenAttention(AttentionCore):
    # Canonical RA's count, 11 products per causal pair (rabench.flops); open-coding is slower, not more
    # math.
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        return masked_softmax_apply(ra_logits(q, k, self.gates, self.scale), v)
