"""Small pieces the open-coded attentions share."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def causal_mask(t: int, device: torch.device) -> Tensor:
    """(T, T) bool, True where key j <= query i."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def masked_softmax_apply(logits: Tensor, v: Tensor) -> Tensor:
    """softmax over keys of causally masked logits (in float32 or better), then @ v."""
    t = logits.shape[-1]
    logits = logits.masked_fill(~causal_mask(t, logits.device), float("-inf"))
    probs = torch.softmax(upcast(logits), dim=-1)
    return probs.to(v.dtype) @ v


def apply_query_affine(q: Tensor, scale: Tensor, shift: Tensor | None) -> Tensor:
    """scale_h q + shift_h per head, in q's dtype (q (B, H, T, D), scale (H,), shift (H, D) or None):
    a folding core's query map (AttentionCore.query_affine) applied to the activation, as the core
    does when it is called as a module; inside the model the projection does it instead."""
    q = q * scale.to(q.dtype).view(1, -1, 1, 1)
    return q if shift is None else q + shift.to(q.dtype).unsqueeze(1)


def upcast(t: Tensor) -> Tensor:
    """Half-precision tensors to float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@torch.no_grad()
def init_linear(linear: nn.Linear, generator: torch.Generator | None, weight_std: float | None = None,
                bias: float | None = None) -> None:
    """nn.Linear's own init (U(+-1/sqrt(fan_in)) for weight and bias), drawn from `generator`.

    weight_std replaces the weight's draw by N(0, weight_std^2); bias by a constant. Same
    distributions as the torch defaults, but from the core's own generator (paired starts).
    """
    bound = 1.0 / math.sqrt(linear.in_features)
    if weight_std is None:
        nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
    else:
        nn.init.normal_(linear.weight, mean=0.0, std=weight_std, generator=generator)
    if linear.bias is not None:
        if bias is None:
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
        else:
            nn.init.constant_(linear.bias, bias)
