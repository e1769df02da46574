"""Canonical RA from its gate logits, for eager calls: gates.py's small kernels around the RA
kernels' launchers (op.ra_forward, op.ra_backward), nothing else on the host.

torch.compile keeps the composed form instead (attention/kernel_route.py), which it fuses.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import buffers, launching, op
from . import gates as KG
from . import ra_flash as K
from .buffers import bht_strides, pow2, unit_last

Tensor = torch.Tensor


def _launch_gates(kernel, name: str, H: int, args: tuple, D: int, **constexprs) -> None:
    """One program per head (only eager calls come here: _EagerGatedRA)."""
    launching.launch_untuned(kernel, (name, *constexprs.values()), H, 1, 1, args,
                             dict(BD=pow2(D), **constexprs))


def gate_inputs(logits: Tensor, u: Tensor, c: float, cm: float, rec: bool
                ) -> tuple[Tensor, Optional[Tensor], Tensor]:
    """(s1, s2, ub) of kernels/gates.py from the gate logits (H, 3) and u (H, D), float32;
    s2 is None without the reciprocal term.  cm = c times the reciprocal term's multiplier."""
    H, D = u.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    s1, ub = buffers.empty((H,), **f32), buffers.empty((H, D), **f32)
    s2 = buffers.empty((H,), **f32) if rec else None
    _launch_gates(KG._gate_fwd_kernel, "gate_fwd", H,
                  (logits, u, s1, s2 if rec else s1, ub, c, cm, D), D, REC=rec)
    return s1, s2, ub


def gate_grads(logits: Tensor, u: Tensor, k: Tensor, dbias: Tensor, dsc: Tensor, c: float,
               cm: float, rec: bool) -> tuple[Tensor, Tensor]:
    """(dL/dlogits (H, 3), dL/du (H, D)) from the RA kernels' per-row sums (ra_backward's rows):
    dbias (B, H, T) dL/dbias_j and dsc (B, H, T, 2), with the keys k (B, H, T, D) that made the
    bias (dL/dub = sum over b, j of dbias_j k_j).  Each head's B * T rows go to the row kernel
    in shares of `rows` (192 programs at GPT-2's shape), whose partial sums one program per
    head adds up."""
    B, H, T, D = k.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    block_t = 16 if K.INTERPRET else 64
    rows = block_t * (4 if K.INTERPRET else 8)
    splits = max(1, -(-(B * T) // rows))  # one share at least: T = 0 still writes zeros
    pdu, pds = buffers.empty((H, splits, D), **f32), buffers.empty((H, splits, 2), **f32)
    launching.launch_untuned(KG._gate_bwd_rows_kernel, ("gate_bwd_rows", rec), H, splits, 1,
                             (k, dbias, dsc, pdu, pds, B, H, T, *bht_strides(k), D, rows),
                             dict(BD=pow2(D), REC=rec, BLOCK_T=block_t))
    dg, du = buffers.empty((H, 3), **f32), buffers.empty((H, D), **f32)
    _launch_gates(KG._gate_bwd_kernel, "gate_bwd", H,
                  (logits, u, pdu, pds, dg, du, c, cm, splits, D), D)
    return dg, du


class _EagerGatedRA(torch.autograd.Function):
    """Canonical RA (or, rec=False, without its reciprocal term) from the gate logits and u:
    the gate kernels around the RA kernels' launchers, nothing else on the host."""

    @staticmethod
    def forward(ctx, q, k, v, logits, u, c, cm, band, rec):
        s1, s2, ub = gate_inputs(logits, u, c, cm, rec)
        o, lse = op.ra_forward(q, k, None, None, v, ub, s1, s2, band, rec)
        ctx.save_for_backward(q, k, v, ub, s1, s2, o, lse, logits, u)
        ctx.c, ctx.cm, ctx.band, ctx.rec = c, cm, band, rec
        return o

    @staticmethod
    def backward(ctx, do):
        if do is None:
            return (None,) * 9
        q, k, v, ub, s1, s2, o, lse, logits, u = ctx.saved_tensors
        dq, dk, _, _, dv, dbias, dsc = op.ra_backward(do, q, k, None, None, v, ub, s1, s2, o,
                                                      lse, ctx.band, ctx.rec, rows=True)
        dg, du = gate_grads(logits, u, unit_last(k), dbias, dsc, ctx.c, ctx.cm, ctx.rec)
        return dq, dk, dv, dg, du, None, None, None, None


def gated_eager_applies(q: Tensor, logits: Tensor, u: Tensor) -> bool:
    """Whether ra_gated_eager serves this call: eager (torch.compile traces the composed gates
    instead, and fuses them), the kernels available for q, float32 gate parameters."""
    return (not torch.compiler.is_compiling() and logits.dtype == torch.float32
            and u.dtype == torch.float32 and (q.is_cuda or K.INTERPRET))


def ra_gated_eager(q: Tensor, k: Tensor, v: Tensor, logits: Tensor, u: Tensor, scale: float,
                   rec_mult: float = 1.0, band: Optional[int] = None, reciprocal: bool = True
                   ) -> Tensor:
    """Canonical RA, L_ij = w_std S_ij + w_rec m S_ji [i - j < band] + w_disc k_j . u (w =
    softmax(logits), S = scale q k^T, m = rec_mult), or without the reciprocal term, in eager
    calls (gated_eager_applies): the gates' arithmetic and its gradient run in kernels/gates.py's
    three launches.  q, k, v: (B, H, T, D) with a unit last stride (views of a qkv projection);
    logits (H, 3) and u (H, D) float32, differentiable.  Returns (B, H, T, D) in v.dtype."""
    op.check_device(q)
    band_i = op.band_arg(band, q.shape[2], reciprocal)
    return _EagerGatedRA.apply(q, k, v, logits.contiguous(), u.contiguous(), float(scale),
                               float(scale) * float(rec_mult), band_i, bool(reciprocal))
