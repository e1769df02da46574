"""RA through SDPA by the folded identity (ra-math.md): exact, no custom kernel.

    L_ij = c [w_std q_i, w_rec k_i, w_disc/c] . [k_j, q_j, d_j]

so RA is standard causal attention whose query/key vectors have 2D+1 entries (padded
here to a multiple of 8 for the fused kernels); values keep D. Without the reciprocal
block the same fold gives ra-norec through SDPA at D+1 (its backend="folded").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.gates import RAGates, per_head
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


def fold_ra(q: Tensor, k: Tensor, gates: RAGates, scale: float, reciprocal: bool = True) -> tuple[Tensor, Tensor]:
    """(q', k') of head dim 2D+1 (D+1 with reciprocal=False: ra-norec's fold) rounded up to a
    multiple of 8, zero padded."""
    w_std, w_rec, w_disc = gates.weights()
    d = gates.discoverability(k).to(k.dtype).unsqueeze(-1)  # (B, H, T, 1)
    q_parts, k_parts = [q * per_head(w_std).to(q.dtype)], [k]
    if reciprocal:
        q_parts.append(k * per_head(w_rec).to(k.dtype))
        k_parts.append(q)
    q_parts.append(torch.ones_like(d) * per_head(w_disc / scale).to(k.dtype))
    k_parts.append(d)
    q_fold, k_fold = torch.cat(q_parts, dim=-1), torch.cat(k_parts, dim=-1)
    pad = (-q_fold.shape[-1]) % 8
    return F.pad(q_fold, (0, pad)), F.pad(k_fold, (0, pad))


@register("ra-folded", "RA through SDPA with query/key head dim 2D+1 (folded identity), exact", family="ra")
class RAFoldedAttention(AttentionCore):
    # Canonical RA's count, 11 products per causal pair (rabench.flops): the floor of the math, not of
    # SDPA at 2D+1.
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        q_fold, k_fold = fold_ra(q, k, self.gates, self.scale)
        return F.scaled_dot_product_attention(q_fold, k_fold, v, is_causal=True, scale=self.scale)
