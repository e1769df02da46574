"""RA's definition open-coded in its own terms (ra-math.md), with the generalisations the
variants need (ra-math.md, "Generalisations"): ra-open's forward, and the float64 oracle
(`reference`) of every route that computes the same logits another way (the fused kernel, SDPA on
folded operands, a row gate riding on an operand), which `rabench check` compares against.

Written from the formula, not from the routes' operand folds (`kernel_route`: the kernel's
scales, a row gate on the reciprocal pair), so a route that folds wrongly differs from it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rabench.attention.common import masked_softmax_apply, upcast
from rabench.attention.gates import RAGates, per_head


def ra_logits(q: Tensor, k: Tensor, gates: RAGates, scale: float, rec_mult: float | Tensor = 1.0,
              band: int | None = None, row_gate: Tensor | None = None, rec_scores: Tensor | None = None) -> Tensor:
    """Unmasked logits (B, H, T, T) in float32 or better:

        L_ij = w_std S_ij + r_i [i - j < band] a w_rec S_ji + w_disc d_j,   S = c Q K^T, d_j = k_j . u

    a = rec_mult (a schedule's multiplier; 0 drops the reciprocal term), r = row_gate (B, H, T),
    band = the reciprocal term's window (None: every j <= i); rec_scores (B, H, T, T) replaces S^T
    (a low-rank reciprocal score, c (k_i W2).(q_j W1))."""
    w_std, w_rec, w_disc = gates.weights()
    scores = upcast((q @ k.transpose(-2, -1)) * scale)  # S_ij = c q_i.k_j
    dt = scores.dtype
    # S^T_ij = S_ji: j's query meets i's key (or the low-rank score in its place)
    s_t = scores.transpose(-2, -1) if rec_scores is None else upcast(rec_scores)
    rec = per_head(w_rec).to(dt) * s_t
    if not (isinstance(rec_mult, float) and rec_mult == 1.0):
        rec = rec * (rec_mult.to(dt) if isinstance(rec_mult, Tensor) else rec_mult)
    if row_gate is not None:
        rec = rec * row_gate.to(dt).unsqueeze(-1)
    if band is not None:
        i = torch.arange(scores.shape[-1], device=scores.device)
        rec = rec * ((i.view(-1, 1) - i.view(1, -1)) < band).to(dt)
    d = gates.discoverability(k).to(dt)  # (B, H, T): d_j, a column bias
    return per_head(w_std).to(dt) * scores + rec + per_head(w_disc).to(dt) * d.unsqueeze(-2)


def ra_definition(q: Tensor, k: Tensor, v: Tensor, gates: RAGates, scale: float, **terms) -> Tensor:
    """softmax over j <= i of `ra_logits(..., **terms)`, then @ v."""
    return masked_softmax_apply(ra_logits(q, k, gates, scale, **terms), v)


def standard_definition(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax over j <= i of c q_i.k_j, then @ v: causal scaled dot-product attention."""
    return masked_softmax_apply((q @ k.transpose(-2, -1)) * scale, v)
