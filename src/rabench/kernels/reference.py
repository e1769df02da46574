"""The torch definition of what the RA kernels compute: two bilinear scores, a band, a column bias.

    L_ij = s1_h q1_i.k1_j + m_ij s2_h q2_i.k2_j + bias_j (+ R_hij)   for j <= i, -inf otherwise
    m_ij = [band is None or i - j < band]
    O    = softmax(L) V

bias is (B, H, T), or a per-head vector u (H, D1) meaning bias_j = k1_j . u (k1 as given, before
any scale); s1, s2 are optional per-head scales (H,); tied means q2 = k1 and k2 = q1 (canonical
RA's reciprocal term on the first pair itself); R is an optional tile bias (H, T, T) shared by
the batch (ra-amortized's cached pattern).

This is the package's one statement of those semantics: the CPU route runs it (in float32 or
better) where the fused kernels cannot, and GPU checks compare the kernels against it in
float64. Written densely (T x T logits) for clarity, not speed. The tests keep their own
reference, written independently of this one, so a slip here cannot hide in both.
"""

from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor


def ra_reference(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
                 bias: Optional[Tensor] = None, band: Optional[int] = None, dtype: torch.dtype = torch.float64, *,
                 scale1: Optional[Tensor] = None, scale2: Optional[Tensor] = None, tied: bool = False,
                 tile_bias: Optional[Tensor] = None) -> Tensor:
    """O = softmax(L) V with L as in the module docstring, every product computed in `dtype`
    (float64 by default); differentiable in every input. Returns (B, H, T, Dv) in `dtype`."""
    if tied:
        q2, k2 = k1, q1
    # scales, then the bias, then the products: this order fixes the order autograd sums k1's
    # gradient in (k1 has three uses when tied); reordering moves float32 gradients by an ulp
    q1 = scaled(q1, scale1, dtype)
    q2 = scaled(q2, scale2, dtype) if q2 is not None else None
    col = column_bias(bias, k1, dtype) if bias is not None else None
    logits = bilinear(q1, k1, dtype)
    if q2 is not None:
        logits = logits + within_band(bilinear(q2, k2, dtype), band)
    if col is not None:
        logits = logits + col.unsqueeze(-2)
    t = logits.shape[-1]
    future = torch.ones(t, t, dtype=torch.bool, device=logits.device).triu(1)  # key j after query i
    if tile_bias is not None:  # its entries above the diagonal (-inf in a cached pattern) unused
        logits = logits + tile_bias.to(dtype).masked_fill(future, 0.0)
    return torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1) @ v.to(dtype)


def scaled(q: Tensor, scale: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """s_h q, in `dtype` (the scale is per head, (H,))."""
    q = q.to(dtype)
    return q if scale is None else q * scale.to(dtype).view(1, -1, 1, 1)


def bilinear(q: Tensor, k: Tensor, dtype: torch.dtype) -> Tensor:
    """q_i.k_j, (B, H, T, T) in `dtype`. The trailing cast keeps the sums in `dtype` where
    autocast runs the product itself in lower precision."""
    return (q.to(dtype) @ k.to(dtype).transpose(-2, -1)).to(dtype)


def within_band(scores: Tensor, band: Optional[int]) -> Tensor:
    """Zero outside the band i - j < band (None: no band)."""
    if band is None:
        return scores
    idx = torch.arange(scores.shape[-1], device=scores.device)
    return scores * ((idx.view(-1, 1) - idx.view(1, -1)) < band).to(scores.dtype)


def column_bias(bias: Tensor, k1: Tensor, dtype: torch.dtype) -> Tensor:
    """bias_j per head, (B, H, T) in `dtype`: given as is, or k1_j . u from a per-head vector u (H, D1).
    A broadcast product summed over d, as attention.gates.key_dot computes d_j for the model."""
    if bias.dim() == 2:
        return (k1.to(dtype) * bias.to(dtype).unsqueeze(1)).sum(-1)
    return bias.to(dtype)
