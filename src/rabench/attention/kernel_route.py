"""The route from RA's parameters to the RA kernel: its inputs, then the fused Triton kernel on a
GPU or, on a CPU, the kernel's torch definition (`rabench.kernels.reference`, via `open_coded_ra`).

The kernel computes  L_ij = q1_i.k1_j + m_ij (q2_i.k2_j) + bias_j  (causal) and knows
nothing of gates or scales. Canonical RA folds into it as (ra-math.md, folded identity):

    q1 = w_std c q      k1 = k        (standard term, S_ij)
    q2 = w_rec c k      k2 = q        (reciprocal term, S_ji = c q_j.k_i)
    bias_j = w_disc d_j = w_disc k_j.u

A per-query row gate r_i on the reciprocal term multiplies q2's rows (exact, by
linearity); autograd carries every gradient back through these products. The RA
variants build on `ra_operands` and `run_ra`.

`run_canonical_ra` is the same identity without copies: q1 = q, k1 = k with the per-head
scales s1 = w_std c and s2 = w_rec c handed to the kernel, which applies them to its tiles in
registers (and to the gradients), and the reciprocal pair tied to the first (q2 = k, k2 = q:
the kernel reads q and k once more and returns their whole gradients). The bias goes in as the
vector w_disc u (H, D): the kernel computes d_j = k_j . u from its key tiles and adds the bias
path's dk term itself. q and k stay views of the qkv projection. Any RA module without a row gate uses it (row gates vary per token, so
they still need `ra_operands`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rabench.attention.gates import RAGates, per_head
from rabench.errors import RabenchError
from rabench.kernels.reference import ra_reference

BACKENDS = ("auto", "triton", "torch")  # run_ra's routes: auto = triton on a GPU, torch on a CPU
# rabench check's float64-reference tolerance for cores that run through the fused kernel: on a GPU
# its float32 score products run in tf32 (relative error about 2e-3; kernel-versions.md)
KERNEL_REFERENCE_TOLERANCE = 5e-3


def ra_operands(
    q: Tensor, k: Tensor, gates: RAGates, scale: float, row_gate: Tensor | None = None, rec_mult: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(q1, k1, q2, k2, bias) for canonical RA; row_gate is (B, H, T) or None; bias is the
    vector w_disc u (H, D), bias_j = k1_j . bias[h] (k1 = k).

    No .contiguous() copies: the kernel reads any strides with a unit last one, so k1 and k2
    stay views of the qkv projection and only the scaled q1, q2 are new tensors."""
    w_std, w_rec, w_disc = gates.weights()
    q1 = q * per_head(w_std * scale).to(q.dtype)
    q2 = k * per_head(w_rec * (scale * rec_mult)).to(k.dtype)
    if row_gate is not None:
        q2 = q2 * row_gate.unsqueeze(-1).to(q2.dtype)
    return q1, k, q2, q, gates.bias_vector(w_disc)


def run_canonical_ra(
    q: Tensor, k: Tensor, v: Tensor, gates: RAGates, scale: float, band: int | None = None,
    backend: str = "auto", rec_mult: float | Tensor = 1.0, reciprocal: bool = True,
) -> Tensor:
    """Canonical RA with the gates as per-head kernel scales, scale1 = w_std c and
    scale2 = w_rec c rec_mult, and the reciprocal pair tied (q2 = k, k2 = q): no copies of q
    or k. reciprocal=False drops the reciprocal term (L = w_std S + w_disc d)."""
    w_std, w_rec, w_disc = gates.weights()
    s2 = w_rec * (scale * rec_mult) if reciprocal else None
    return run_ra(q, k, None, None, v, gates.bias_vector(w_disc), band=band, backend=backend, scale1=w_std * scale,
                  scale2=s2, tied=reciprocal)


def run_ra(
    q1: Tensor,
    k1: Tensor,
    q2: Tensor | None,
    k2: Tensor | None,
    v: Tensor,
    bias: Tensor | None,
    band: int | None = None,
    backend: str = "auto",
    scale1: Tensor | None = None,
    scale2: Tensor | None = None,
    tied: bool = False,
) -> Tensor:
    """The kernel's semantics through Triton, or open-coded in torch (backend='torch').
    bias: (B, H, T), or (H, D1) for bias_j = k1_j . bias[h]; scale1/scale2: optional per-head
    (H,) scales of q1 and q2; tied: q2 = k1 and k2 = q1 (pass q2 = k2 = None; see
    run_canonical_ra)."""
    if backend == "auto":
        backend = "triton" if v.is_cuda else "torch"
    if backend == "torch":
        return open_coded_ra(q1, k1, q2, k2, v, bias, band, scale1=scale1, scale2=scale2, tied=tied)
    if backend != "triton":
        raise RabenchError(f"unknown RA backend {backend!r}; choose {', '.join(BACKENDS)}")
    from rabench.kernels import ra_attention

    return ra_attention(q1, k1, q2, k2, v, bias, band=band, scale1=scale1, scale2=scale2, tied=tied)


def open_coded_ra(
    q1: Tensor, k1: Tensor, q2: Tensor | None, k2: Tensor | None, v: Tensor, bias: Tensor | None, band: int | None,
    scale1: Tensor | None = None, scale2: Tensor | None = None, tied: bool = False,
) -> Tensor:
    """The kernel's definition in torch (T x T logits), for CPUs without Triton: the package's
    oracle run in float32 or better (float64 stays float64), the result in v's dtype.
    bias: (B, H, T), or (H, D1) for bias_j = k1_j . bias[h] (k1 unscaled, as the kernel reads it)."""
    compute = torch.promote_types(q1.dtype, torch.float32)  # half precision upcast, as the kernel accumulates
    out = ra_reference(q1, k1, q2, k2, v, bias, band, compute, scale1=scale1, scale2=scale2, tied=tied)
    return out.to(v.dtype)
