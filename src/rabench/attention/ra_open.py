"""Test 3: canonical RA, open-coded exactly as ra-math.md defines it.

    L_ij = w_std * S_ij + w_rec * S_ji + w_disc * d_j   (j <= i),  S = c Q K^T,  d_j = k_j . u
"""

from __future__ import annotations

from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


@register("ra-open", "RA open-coded: w_std*S + w_rec*S^T + w_disc*d, causal (Test 3)", family="ra")
class RAOpenAttention(AttentionCore):
    # Canonical RA's count, 11 products per causal pair (rabench.flops); open-coding is slower, not more
    # math.
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        return ra_definition(q, k, v, self.gates, self.scale)
