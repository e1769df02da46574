"""The route from RA's parameters to the RA kernel: its inputs, then the fused Triton kernel on a
GPU or, on a CPU, the kernel's torch definition (`rabench.kernels.reference`, via `open_coded_ra`).

The kernel computes  L_ij = s1 q1_i.k1_j + m_ij s2 (q2_i.k2_j) + bias_j  (causal), with per-head
scales s1, s2, and knows nothing of gates. Canonical RA folds into it as (ra-math.md, folded
identity):

    q1 = q, s1 = w_std c        k1 = k        (standard term, S_ij)
    q2 = k, s2 = w_rec c        k2 = q        (reciprocal term, S_ji = c q_j.k_i)
    bias_j = w_disc d_j = k_j.(w_disc u)      (the vector w_disc u, (H, D))

`run_canonical_ra` hands the kernel exactly that, without copies: the kernel applies the scales to
its tiles in registers (and to the gradients), reads the reciprocal pair tied to the first (q2 = k,
k2 = q: it reads q and k once more and returns their whole gradients), and computes d_j = k_j . u
from its key tiles. q and k stay views of the qkv projection. Every RA module on the kernel
goes through it. A variant whose reciprocal operands differ passes its own pair: a per-query row
gate r_i on the reciprocal term is q2 = r k (exact, by linearity: `row_gated_pair`, the one copy
such a variant makes), a low-rank term is q2 = k W2, k2 = q W1; the gates stay the kernel's
scales either way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rabench.attention.gates import RAGates
from rabench.errors import RabenchError
from rabench.kernels.reference import ra_reference

BACKENDS = ("auto", "triton", "torch")  # run_ra's routes: auto = triton on a GPU, torch on a CPU
# rabench check's float64-reference tolerance for cores that run through the fused kernel: on a GPU
# its float32 score products run in tf32 (relative error about 2e-3; kernel-versions.md)
KERNEL_REFERENCE_TOLERANCE = 5e-3


def row_gated_pair(q: Tensor, k: Tensor, row_gate: Tensor) -> tuple[Tensor, Tensor]:
    """The reciprocal pair (q2, k2) = (r k, q) of a per-query row gate r (B, H, T) on the
    reciprocal term: r_i w_rec c k_i.q_j, with w_rec c left to the kernel's scale."""
    return k * row_gate.unsqueeze(-1).to(k.dtype), q


def run_canonical_ra(
    q: Tensor, k: Tensor, v: Tensor, gates: RAGates, scale: float, band: int | None = None,
    backend: str = "auto", rec_mult: float | Tensor = 1.0, reciprocal: bool = True,
    pair: tuple[Tensor, Tensor] | None = None, tile_bias: Tensor | None = None,
) -> Tensor:
    """Canonical RA with the gates as per-head kernel scales, scale1 = w_std c and
    scale2 = w_rec c rec_mult, and the reciprocal pair tied (q2 = k, k2 = q): no copies of q
    or k. reciprocal=False drops the reciprocal term (L = w_std S + w_disc d). pair: the
    reciprocal term's own (q2, k2) in place of the tied (k, q), e.g. `row_gated_pair`'s.
    tile_bias: R (H, T, T) added to the logits, no gradient (ra-amortized's cached pattern).

    Eager calls on the kernel with the gates as they are (no pair, a constant rec_mult) take the
    kernels' gated entry, which does the gates' arithmetic and its gradient in three small launches
    (`rabench.kernels.gates`: the same functions, far less host time); torch.compile traces the
    composed form below and fuses it."""
    if pair is None and tile_bias is None and isinstance(rec_mult, (int, float)) and on_kernel(backend, v):
        from rabench.kernels.eager_gated import gated_eager_applies, ra_gated_eager

        if gated_eager_applies(q, gates.logits, gates.u):
            return ra_gated_eager(q, k, v, gates.logits, gates.u, scale, rec_mult, band, reciprocal)
    w_std, w_rec, w_disc = gates.weights()
    s2 = w_rec * (scale * rec_mult) if reciprocal else None
    q2, k2 = pair if (pair is not None and reciprocal) else (None, None)
    return run_ra(q, k, q2, k2, v, gates.bias_vector(w_disc), band=band, backend=backend, scale1=w_std * scale,
                  scale2=s2, tied=reciprocal and q2 is None, tile_bias=tile_bias)


def on_kernel(backend: str, v: Tensor) -> bool:
    """Whether run_ra takes the Triton route for this backend and input (auto: on a GPU)."""
    return backend == "triton" or (backend == "auto" and v.is_cuda)


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
    tile_bias: Tensor | None = None,
) -> Tensor:
    """The kernel's semantics through Triton, or open-coded in torch (backend='torch').
    bias: (B, H, T), or (H, D1) for bias_j = k1_j . bias[h]; scale1/scale2: optional per-head
    (H,) scales of q1 and q2; tied: q2 = k1 and k2 = q1 (pass q2 = k2 = None; see
    run_canonical_ra); tile_bias: an (H, T, T) bias on the logits, not differentiated."""
    if backend == "auto":
        backend = "triton" if on_kernel(backend, v) else "torch"
    if backend == "torch":
        return open_coded_ra(q1, k1, q2, k2, v, bias, band, scale1=scale1, scale2=scale2, tied=tied,
                             tile_bias=tile_bias)
    if backend != "triton":
        raise RabenchError(f"unknown RA backend {backend!r}; choose {', '.join(BACKENDS)}")
    from rabench.kernels import ra_attention

    return ra_attention(q1, k1, q2, k2, v, bias, band=band, scale1=scale1, scale2=scale2, tied=tied,
                        tile_bias=tile_bias)


def open_coded_ra(
    q1: Tensor, k1: Tensor, q2: Tensor | None, k2: Tensor | None, v: Tensor, bias: Tensor | None, band: int | None,
    scale1: Tensor | None = None, scale2: Tensor | None = None, tied: bool = False,
    tile_bias: Tensor | None = None,
) -> Tensor:
    """The kernel's definition in torch (T x T logits), for CPUs without Triton: the package's
    oracle run in float32 or better (float64 stays float64), the result in v's dtype.
    bias: (B, H, T), or (H, D1) for bias_j = k1_j . bias[h] (k1 unscaled, as the kernel reads it)."""
    compute = torch.promote_types(q1.dtype, torch.float32)  # half precision upcast, as the kernel accumulates
    out = ra_reference(q1, k1, q2, k2, v, bias, band, compute, scale1=scale1, scale2=scale2, tied=tied,
                       tile_bias=tile_bias)
    return out.to(v.dtype)
