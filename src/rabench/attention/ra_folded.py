"""RA through SDPA by the folded identity (ra-math.md): exact, no custom kernel.

    L_ij = c [w_std q_i, w_rec k_i, w_disc/c] . [k_j, q_j, d_j]
         = c [w_std q_i + (w_disc/c) u, w_rec k_i] . [k_j, q_j]        (d_j = k_j . u)

so RA is standard causal attention whose query/key vectors have 2D entries (padded to a
multiple of 8 for the fused kernels when D is not); values keep D. The column bias needs no
entry of its own: it rides on the query (RAGates.query_affine). Without the reciprocal block the
same fold is ra-norec's backend="folded", at head dim D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.common import apply_query_affine
from rabench.attention.definitions import ra_definition
from rabench.attention.gates import RAGates, per_head
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


def fold_ra(q: Tensor, k: Tensor, gates: RAGates, scale: float) -> tuple[Tensor, Tensor]:
    """(q', k') of head dim 2D rounded up to a multiple of 8, zero padded:
    q' = [w_std q + (w_disc/c) u, w_rec k], k' = [k, q]."""
    weights = gates.weights()
    q_shift = apply_query_affine(q, *gates.query_affine(scale, weights))
    q_fold = torch.cat([q_shift, k * per_head(weights[1]).to(k.dtype)], dim=-1)
    k_fold = torch.cat([k, q], dim=-1)
    pad = (-q_fold.shape[-1]) % 8
    return F.pad(q_fold, (0, pad)), F.pad(k_fold, (0, pad))


@register("ra-folded", "RA through SDPA with query/key head dim 2D (folded identity), exact", family="ra")
class RAFoldedAttention(AttentionCore):
    # Canonical RA's count, 11 products per causal pair (rabench.flops): the floor of the math, not of
    # SDPA at 2D.
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        q_fold, k_fold = fold_ra(q, k, self.gates, self.scale)
        return F.scaled_dot_product_attention(q_fold, k_fold, v, is_causal=True, scale=self.scale)
