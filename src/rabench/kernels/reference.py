"""Float64 torch reference of the kernel semantics (tests and GPU checks use it).

    L_ij = q1_i.k1_j + m_ij q2_i.k2_j + bias_j  for j <= i, -inf otherwise;  m_ij = [i-j < band]
    O    = softmax(L) V
"""

from __future__ import annotations

from typing import Optional

import torch


def ra_reference(q1, k1, q2, k2, v, bias: Optional[torch.Tensor] = None,
                 band: Optional[int] = None, dtype=torch.float64) -> torch.Tensor:
    """Dense O(T^2) reference, computed in `dtype` (float64 by default); differentiable."""
    T = q1.shape[-2]
    L = q1.to(dtype) @ k1.to(dtype).transpose(-1, -2)
    i = torch.arange(T, device=q1.device)[:, None]
    j = torch.arange(T, device=q1.device)[None, :]
    if q2 is not None:
        rec = q2.to(dtype) @ k2.to(dtype).transpose(-1, -2)
        if band is not None:
            rec = rec * ((i - j) < band).to(dtype)
        L = L + rec
    if bias is not None:
        L = L + bias.to(dtype)[..., None, :]
    L = L.masked_fill(j > i, float("-inf"))
    return torch.softmax(L, dim=-1) @ v.to(dtype)
