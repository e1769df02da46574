"""Float64 references of the definitions in ra-math.md, written independently of the modules."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ra_reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor, u: Tensor, row_gate: Tensor | None = None,
                 band: int | None = None) -> Tensor:
    """Canonical RA in float64: L_ij = w_std S_ij + r_i [i-j<band] w_rec S_ji + w_disc k_j.u, j <= i.

    q, k, v: (B, H, T, D); g: (H, 3) gate logits; u: (H, D); row_gate: (B, H, T) or None.
    """
    q, k, v, g, u = (t.double() for t in (q, k, v, g, u))
    t, d = q.shape[-2], q.shape[-1]
    c = 1.0 / math.sqrt(d)
    w = torch.softmax(g, dim=-1)
    s = c * torch.einsum("bhid,bhjd->bhij", q, k)
    s_t = s.transpose(-1, -2)  # S^T_ij = S_ji = c q_j.k_i
    disc = torch.einsum("bhjd,hd->bhj", k, u)
    rec = w[:, 1].view(1, -1, 1, 1) * s_t
    if row_gate is not None:
        rec = rec * row_gate.double().unsqueeze(-1)
    idx = torch.arange(t)
    if band is not None:
        rec = rec * ((idx.view(-1, 1) - idx.view(1, -1)) < band).double()
    logits = w[:, 0].view(1, -1, 1, 1) * s + rec + w[:, 2].view(1, -1, 1, 1) * disc.unsqueeze(-2)
    causal = idx.view(-1, 1) >= idx.view(1, -1)
    logits = logits.masked_fill(~causal, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def ra_norec_reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor, u: Tensor) -> Tensor:
    """RA with w_rec held at 0, float64: L_ij = w_std S_ij + w_disc k_j.u (j <= i), w = softmax(g) over 3 logits."""
    q, k, v, g, u = (t.double() for t in (q, k, v, g, u))
    t = q.shape[-2]
    w = torch.softmax(g, dim=-1)
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    disc = torch.einsum("bhjd,hd->bhj", k, u)
    logits = w[:, 0].view(1, -1, 1, 1) * s + w[:, 2].view(1, -1, 1, 1) * disc.unsqueeze(-2)
    idx = torch.arange(t)
    logits = logits.masked_fill(~(idx.view(-1, 1) >= idx.view(1, -1)), float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def standard_reference(q: Tensor, k: Tensor, v: Tensor, temperature: Tensor | None = None) -> Tensor:
    """Causal softmax(c Q K^T) V in float64, optionally times a per-head factor on the logits."""
    q, k, v = q.double(), k.double(), v.double()
    t, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
    if temperature is not None:
        s = s * temperature.double().view(1, -1, 1, 1)
    idx = torch.arange(t)
    s = s.masked_fill(~(idx.view(-1, 1) >= idx.view(1, -1)), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def rel_err(a: Tensor, b: Tensor, floor: float = 1e-3) -> float:
    """||a - b|| / max(||b||, floor), NaN-safe: NaN anywhere gives inf.

    The floor makes an exactly-zero reference (e.g. a gradient at T=1, where softmax over one
    key is constant) compare in absolute terms: torch's ~1e-16 rounding then counts as ~1e-13,
    not as an error of 1e14. References in these tests have norms of order 1 or more.
    """
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return math.inf
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def grads(out: Tensor, tensors: list[Tensor], weight: Tensor) -> list[Tensor]:
    """Gradients of the projection sum(out * weight) with respect to every tensor in `tensors`."""
    return list(torch.autograd.grad((out * weight).sum(), tensors))


def assert_matches(out: Tensor, ref: Tensor, tensors: list[Tensor], tol: float) -> None:
    """Output and the gradients of a random projection of it, w.r.t. every tensor in `tensors`."""
    assert rel_err(out, ref) < tol, rel_err(out, ref)
    w = torch.randn_like(ref)
    for i, (got, want) in enumerate(zip(grads(out, tensors, w), grads(ref, tensors, w))):
        assert rel_err(got, want) < tol, (i, rel_err(got, want))


def heads(qkv: Tensor, H: int) -> tuple[Tensor, ...]:
    """q, k, v as (B, H, T, D) views of a (B, T, 3 H D) projection, as the model makes them."""
    B, T, C = qkv.shape
    return tuple(z.view(B, T, H, C // (3 * H)).transpose(1, 2) for z in qkv.split(C // 3, dim=2))
