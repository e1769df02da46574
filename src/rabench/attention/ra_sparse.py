"""Plan direction 1: sparse reciprocity.

    A_ij  = softmax_j(S_ij)  (causal)                            first pass, standard attention
    M_ij  = [A_ij is among the n_i largest of row i],  n_i = max(1, round(p (i + 1)))
    L_ij  = w_std S_ij + M_ij w_rec S_ji + w_disc d_j            (j <= i)

The reciprocal term survives only where the first pass already attends most: the top p
of each row's i + 1 causal keys (round half up, at least one key). M is a selection, not
a function gradients flow through (as top-k is); gradients reach q and k through S and
the kept S_ji. softmax is monotone within a row, so ranking S_ij ranks A_ij: M is taken
from S directly, by thresholding at each row's n_i-th largest score (ties at the threshold
are all kept). p = 1 keeps every causal key: canonical RA.

Open-coded in torch with (B, H, T, T) logits: the selection needs the full first pass,
and the fused kernel has no per-element mask. It is here to measure quality, not speed;
the plan's expected speedup would need a gather-based sparse kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.common import causal_mask, masked_softmax_apply, upcast
from rabench.attention.gates import RAGates, per_head
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError


def top_fraction_mask(scores: Tensor, p: float) -> Tensor:
    """Bool (..., T, T): per row i, the n_i = max(1, round(p (i + 1))) largest causal scores."""
    t = scores.shape[-1]
    causal = causal_mask(t, scores.device)
    rows = torch.arange(1, t + 1, device=scores.device, dtype=torch.float64)  # i + 1 keys in row i
    n = torch.floor(p * rows + 0.5).clamp(1, t).long()  # (T,)
    n_max = min(t, max(1, math.floor(p * t + 0.5)))  # n_i grows with i: the last row's, without a sync
    # the largest max(n) scores of each row suffice (topk, not a full sort: T x p T, not T x T)
    ranked = scores.masked_fill(~causal, float("-inf")).topk(n_max, dim=-1).values
    threshold = ranked.gather(-1, (n - 1).view(t, 1).expand(*scores.shape[:-1], 1))  # n_i-th largest
    return (scores >= threshold) & causal


@register("ra-sparse", "RA whose reciprocal term is kept only at each row's top-p first-pass weights (open-coded)",
          family="ra", variant=True, p=0.10, backend="auto")
class RASparseAttention(AttentionCore):
    # Full RA's count: the selection needs every reciprocal score (open-coded, nothing skipped).
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.p = options["p"]
        if not 0.0 < self.p <= 1.0:
            raise RabenchError(f"ra-sparse: p must be in (0, 1], got {self.p}")
        if options["backend"] not in ("auto", "torch"):
            raise RabenchError("ra-sparse is open-coded only (the kernel has no per-element mask): "
                               "backend auto or torch")
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        w_std, w_rec, w_disc = self.gates.weights()
        scores = upcast((q @ k.transpose(-2, -1)) * self.scale)  # S_ij = c q_i.k_j
        with torch.no_grad():
            keep = top_fraction_mask(scores, self.p)  # M_ij, from the first pass
        dt = scores.dtype
        rec = scores.transpose(-2, -1) * keep.to(dt)  # M_ij S_ji
        d = self.gates.discoverability(k).to(dt)  # d_j, (B, H, T)
        logits = (per_head(w_std).to(dt) * scores + per_head(w_rec).to(dt) * rec
                  + per_head(w_disc).to(dt) * d.unsqueeze(-2))
        return masked_softmax_apply(logits, v)
