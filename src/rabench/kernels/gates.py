"""Canonical RA's gates into the fused kernel's inputs, and their gradients back, for eager calls.

RA's per-head gates are w = softmax(g), g = (g_std, g_rec, g_disc) (rabench.attention.gates), and
its discoverability vector u.  The RA kernel takes them as per-head scales and a bias vector
(rabench.attention.kernel_route, the folded identity), with c = 1/sqrt(D) and m the reciprocal
term's multiplier:

    s1 = w_std c        s2 = w_rec c m        ub = w_disc u        (ub: bias_j = k_j . ub)

and returns the gradients of those per key row (op.ra_backward with rows=True: dL/ds1, dL/ds2
and dL/dbias_j, whose sums over every batch and row the backward kernel takes, with
dL/dub = sum_j dL/dbias_j k_j).  The chain rule back to g and u:

    dL/dw_std = c dL/ds1        dL/dw_rec = c m dL/ds2        dL/dw_disc = u . dL/dub
    dL/du     = w_disc dL/dub
    dL/dg_k   = w_k (dL/dw_k - sum_l w_l dL/dw_l)             (softmax's Jacobian)

Composed from torch ops this is about 25 small ops and a dozen autograd nodes a layer, which in
an eager training step cost more host time than the attention kernels' own launches
(benchmarks/eager_wrapper_cpu.py).  Here the forward is one launch of one program per head, the
backward two: the row sums spread over the GPU (_gate_bwd_rows_kernel), then one program per
head for the rest.
torch.compile keeps the composed form (it fuses it into its own kernels): see
eager_gated.ra_gated_eager.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softmax3(G, h):
    """w = softmax of head h's three gate logits (row h of the (H, 3) tensor G), in float32."""
    g0 = tl.load(G + 3 * h).to(tl.float32)
    g1 = tl.load(G + 3 * h + 1).to(tl.float32)
    g2 = tl.load(G + 3 * h + 2).to(tl.float32)
    top = tl.maximum(tl.maximum(g0, g1), g2)
    e0 = tl.exp(g0 - top)
    e1 = tl.exp(g1 - top)
    e2 = tl.exp(g2 - top)
    z = e0 + e1 + e2
    return e0 / z, e1 / z, e2 / z


@triton.jit
def _gate_fwd_kernel(G, U, SC1, SC2, UB, c, cm, D,
                     BD: tl.constexpr, REC: tl.constexpr):
    # One program per head h: s1 = w_std c, s2 = w_rec c m (REC: the reciprocal term is on),
    # ub = w_disc u.  cm = c m.
    h = tl.program_id(0)
    w_std, w_rec, w_disc = _softmax3(G, h)
    tl.store(SC1 + h, w_std * c)
    if REC:
        tl.store(SC2 + h, w_rec * cm)
    offs = tl.arange(0, BD)
    u = tl.load(U + h * D + offs, mask=offs < D, other=0.0)
    tl.store(UB + h * D + offs, w_disc * u, mask=offs < D)


@triton.jit
def _gate_bwd_rows_kernel(K, DBIAS, DSC, PDU, PDS, B, H, T, skb, skh, skt, D, ROWS,
                          BD: tl.constexpr, REC: tl.constexpr, BLOCK_T: tl.constexpr):
    # Program (h, s): the partial sums over key rows r in [s ROWS, (s + 1) ROWS) of head h's
    # B * T rows (r = b T + t: a share may cross from one batch into the next) of the RA kernels'
    # per-row gradients: dub_s = sum_r DBIAS_r k_r (bias_r = k_r . ub, from the raw keys
    # K (B, H, T, D)), ds1_s = sum_r DSC[r, 0], ds2_s = sum_r DSC[r, 1] (REC).  Written to
    # PDU[h, s, :D] and PDS[h, s, 0:2] for _gate_bwd_kernel: H programs alone would walk every
    # row of their head one block at a time, on 12 of the GPU's 132 SMs at GPT-2's shape.
    # DBIAS (B, H, T) and DSC (B, H, T, 2) contiguous.
    h = tl.program_id(0)
    s = tl.program_id(1)
    offs_d = tl.arange(0, BD)
    offs_t = tl.arange(0, BLOCK_T)
    dub = tl.zeros([BD], dtype=tl.float32)
    ds1 = tl.zeros([BLOCK_T], dtype=tl.float32)
    ds2 = tl.zeros([BLOCK_T], dtype=tl.float32)
    r_end = tl.minimum((s + 1) * ROWS, B * T)
    for r0 in range(s * ROWS, r_end, BLOCK_T):
        r = r0 + offs_t
        live = r < r_end
        b = r // T
        t = r - b * T
        row = (b * H + h) * T + t  # (b, h, t)'s row in DBIAS and DSC
        db = tl.load(DBIAS + row, mask=live, other=0.0)
        kt = tl.load(K + (b.to(tl.int64) * skb + h * skh + t * skt)[:, None] + offs_d[None, :],
                     mask=live[:, None] & (offs_d < D)[None, :], other=0.0)
        dub += tl.sum(db[:, None] * kt.to(tl.float32), axis=0)
        ds1 += tl.load(DSC + 2 * row, mask=live, other=0.0)
        if REC:
            ds2 += tl.load(DSC + 2 * row + 1, mask=live, other=0.0)
    part = h * tl.num_programs(1) + s
    tl.store(PDU + part * D + offs_d, dub, mask=offs_d < D)
    tl.store(PDS + 2 * part, tl.sum(ds1, axis=0))
    tl.store(PDS + 2 * part + 1, tl.sum(ds2, axis=0))  # 0 without the reciprocal term


@triton.jit
def _gate_bwd_kernel(G, U, PDU, PDS, DG, DU, c, cm, SPLITS, D, BD: tl.constexpr):
    # One program per head h: the SPLITS partial sums of _gate_bwd_rows_kernel added up,
    # dL/ds1, dL/ds2 and dL/dub, then the chain rule of the module docstring.
    h = tl.program_id(0)
    offs_d = tl.arange(0, BD)
    dub = tl.zeros([BD], dtype=tl.float32)
    ds1 = 0.0
    ds2 = 0.0
    for s in range(0, SPLITS):
        part = h * SPLITS + s
        dub += tl.load(PDU + part * D + offs_d, mask=offs_d < D, other=0.0)
        ds1 += tl.load(PDS + 2 * part)
        ds2 += tl.load(PDS + 2 * part + 1)
    w_std, w_rec, w_disc = _softmax3(G, h)
    u = tl.load(U + h * D + offs_d, mask=offs_d < D, other=0.0)
    dw_std = c * ds1
    dw_rec = cm * ds2  # 0 without the reciprocal term
    dw_disc = tl.sum(u * dub, axis=0)
    mean = w_std * dw_std + w_rec * dw_rec + w_disc * dw_disc
    tl.store(DG + 3 * h, w_std * (dw_std - mean))
    tl.store(DG + 3 * h + 1, w_rec * (dw_rec - mean))
    tl.store(DG + 3 * h + 2, w_disc * (dw_disc - mean))
    tl.store(DU + h * D + offs_d, w_disc * dub, mask=offs_d < D)
