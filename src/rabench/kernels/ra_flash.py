"""Fused Triton kernels for "two bilinear scores + column bias" causal attention.

Semantics (one batch-head; all scaling and gates are folded into the inputs by the caller):

    L_ij = q1_i . k1_j  +  m_ij * (q2_i . k2_j)  +  bias_j  [+ R_ij]   (j <= i; -inf otherwise)
    m_ij = 1 if (no band or i - j < band) else 0
    P    = softmax_j(L)            O = P V

The tile bias R (HAS_TBIAS) is one (T, T) matrix per head, shared by the batch and not
differentiated: ra-amortized's cached reciprocal pattern, read as a tile beside each score tile
(its entries above the diagonal are never used: the causal mask replaces them).

Optional per-head scales (HAS_SCALE): q1 -> sc1[h] q1 and q2 -> sc2[h] q2, applied to the tiles
in registers, so the gates need no scaled copies of q and k in memory.

The column bias (HAS_BIAS) comes in two forms: 1, a (B, H, T) float32 row read per key block;
2, a per-head vector u (H, D1) float32 with bias_j = k1_j . u computed from the key tile the
kernel holds anyway (canonical RA's discoverability d_j = k_j . u, times its gate).  Form 2 also
finishes dk1 with the bias path's term dbias_j u in the dkdv kernel, so nothing outside the
kernels touches k for the bias but the (H, D1) reduction sum_{b, j} dbias_j k1_j.

Canonical reciprocal attention (notes ra-math.md) is q1 = w_std*c*q, k1 = k, q2 = w_rec*c*k,
k2 = q, bias = w_disc*(k.u): then q2_i . k2_j = w_rec*c * k_i . q_j = w_rec * S_ji, the
reciprocal score, and it only touches tokens <= i, so the causal mask stays the usual one.
With scales it is q1 = q, q2 = k, sc1 = w_std*c, sc2 = w_rec*c: q and k are read in place
(any strides with a unit last one, e.g. views of the qkv projection).

Layout: every tensor is (B, H, T, D) with unit stride on D (any strides on B, H, T);
bias, lse and delta are (B, H, T) contiguous float32.  The output O and the gradients are
written in (B, T, H, D) memory (the qkv projection's order, as SDPA returns them), so the
model's transpose back to (B, T, C) and the backward's dqkv assembly are copies-free.  Head dims are padded up to a power of
two inside the kernel (BLOCK_D*), with masked loads when D is not one.

Softmax runs in base 2: scores are multiplied by log2(e) once, exp2 is used throughout, and
the saved row statistic lse2_i = m_i + log2(l_i) is the log-sum-exp in log2 units, so the
backward recomputes P_ij = exp2(L_ij*log2(e) - lse2_i) exactly without re-normalising.

Kernels:
  _ra_fwd_kernel    one program per (query block, batch*head): online softmax over key blocks
  _ra_delta_kernel  delta_i = rowsum(dO_i * O_i)  (= sum_j P_ij dP_ij, the softmax Jacobian term)
  _ra_dkdv_kernel   one program per (key block, batch*head): column-side sums dv, dk1, dk2, dbias
                    (bias form 2: also the bias row d_j = k1_j . u of its keys, for the dq kernel)
  _ra_dq_kernel     one program per (query block, batch*head): row-side sums dq1, dq2, the
                    scales' chain rule and, for canonical RA (TIED), the whole dq and dk
Two backwards (op.py chooses): two-pass, dkdv then dq, without atomics (each output element is
owned by exactly one program); one-pass, dkdv alone with ROW_ATOMIC: the row-side sums of the
dL tiles it already holds go into float32 accumulators by atomic adds (FlashAttention-2's dQ),
which saves the dq kernel's recomputation of the scores and dP (3 tile products of RA's 14).

Work skipping: key blocks above the diagonal are never visited (causal); with a band, tiles in
which every (i, j) has i - j >= band run without the second score product (forward and
both backward passes), so their cost is that of plain attention.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * LOG2E)

# True when triton.jit built interpreter functions (TRITON_INTERPRET=1 at import time).
INTERPRET = bool(triton.knobs.runtime.interpret)


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
@triton.jit
def _load_rows(base, offs_r, offs_d, stride_t, T, D: tl.constexpr, BLOCK_D: tl.constexpr,
               MASK_R: tl.constexpr):
    """Load a (rows, BLOCK_D) tile; rows >= T and columns >= D read as 0."""
    ptrs = base + offs_r[:, None] * stride_t + offs_d[None, :]
    if MASK_R:
        mask = offs_r[:, None] < T
        if BLOCK_D != D:
            mask = mask & (offs_d[None, :] < D)
        x = tl.load(ptrs, mask=mask, other=0.0)
    elif BLOCK_D != D:
        x = tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _store_rows(base, x, offs_r, offs_d, stride_t, T, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """Store a (rows, BLOCK_D) tile, skipping rows >= T and padded columns >= D."""
    ptrs = base + offs_r[:, None] * stride_t + offs_d[None, :]
    mask = offs_r[:, None] < T
    if BLOCK_D != D:
        mask = mask & (offs_d[None, :] < D)
    tl.store(ptrs, x, mask=mask)


@triton.jit
def _atomic_add_rows(base, x, offs_r, offs_d, stride_t, T, D: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    """Atomically add a (rows, BLOCK_D) float32 tile into float32 memory, skipping rows >= T
    and padded columns >= D.  Relaxed ordering: the sums need atomicity, not ordering."""
    ptrs = base + offs_r[:, None] * stride_t + offs_d[None, :]
    mask = offs_r[:, None] < T
    if BLOCK_D != D:
        mask = mask & (offs_d[None, :] < D)
    tl.atomic_add(ptrs, x, mask=mask, sem="relaxed")


@triton.jit
def _dot(a, b, acc, INTERP: tl.constexpr):
    """a @ b (+ acc) with fp32 accumulation.  Under the interpreter the operands are upcast
    first: its bf16 dot is wrong (Triton 3.6), and the upcast product of bf16 values is exact,
    so the result matches the GPU's bf16 x bf16 -> fp32 tensor-core product."""
    if INTERP:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _scale_rows(x1, x2, SC1, SC2, h, HAS_REC: tl.constexpr, HAS_SCALE: tl.constexpr):
    """(sc1[h] x1, sc2[h] x2) rounded back to the operands' dtype: the per-head gate scales
    applied in the kernel, so the caller never materialises scaled copies of q and k."""
    if HAS_SCALE:
        x1 = (x1.to(tl.float32) * tl.load(SC1 + h)).to(x1.dtype)
        if HAS_REC:
            x2 = (x2.to(tl.float32) * tl.load(SC2 + h)).to(x2.dtype)
    return x1, x2


@triton.jit
def _bias_source(BIAS, bh, h, T, offs_d1, D1: tl.constexpr, HAS_BIAS: tl.constexpr):
    """What the tiles read the column bias from: form 1, the (b, h) row's base pointer; form 2,
    head h's vector u (BLOCK_D1, float32, zero-padded past D1)."""
    if HAS_BIAS == 2:
        return tl.load(BIAS + h * D1 + offs_d1, mask=offs_d1 < D1, other=0.0)
    else:
        return BIAS + bh * T


@triton.jit
def _key_bias(src, k1, offs_n, T, HAS_BIAS: tl.constexpr, MASK_N: tl.constexpr):
    """bias_j for key block offs_n: read from the row (form 1), or d_j = k1_j . u from the raw
    key tile (form 2: BLOCK_N x D1 multiply-adds, about 1/BLOCK_M of the tile's score product)."""
    if HAS_BIAS == 2:
        return tl.sum(k1.to(tl.float32) * src[None, :], axis=1)
    elif MASK_N:
        return tl.load(src + offs_n, mask=offs_n < T, other=0.0)
    else:
        return tl.load(src + offs_n)


@triton.jit
def _tile_bias(tb_base, offs_r, offs_c, s_tb, T):
    """R_rc for query rows offs_r and key columns offs_c of head h's (T, T) tile bias (row
    stride s_tb), float32, 0 past T.  Pass (offs_m[:, None], offs_n[None, :]) for the (query,
    key) orientation and (offs_m[None, :], offs_n[:, None]) for the dkdv kernel's (key, query)."""
    return tl.load(tb_base + offs_r * s_tb + offs_c, mask=(offs_r < T) & (offs_c < T),
                   other=0.0).to(tl.float32)


# ----------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------
@triton.jit
def _fwd_tile(acc, m_i, l_i, q1, q2, offs_m, n0,
              k1_base, k2_base, v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
              BLOCK_N: tl.constexpr,
              D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
              DV: tl.constexpr, BDV: tl.constexpr,
              USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_TBIAS: tl.constexpr,
              CAUSAL: tl.constexpr, MASK_N: tl.constexpr, INTERP: tl.constexpr):
    """Online-softmax accumulation of key block [n0, n0 + BLOCK_N) into (acc, m_i, l_i).

    USE_REC: add the second score product q2 k2^T (False for tiles wholly outside the band).
    CAUSAL:  a diagonal tile; apply j <= i.  MASK_N: keys may run past T (ragged end).
    """
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    # first bilinear score: S1_ij = q1_i . k1_j     (BLOCK_M x BLOCK_N, fp32 accumulate)
    k1 = _load_rows(k1_base, offs_n, offs_d1, s_k1, T, D1, BD1, MASK_N)
    if HAS_TBIAS:
        # tile bias R_ij (one (T, T) matrix per head, shared by the batch) as the product's
        # accumulator: no second live tile beside the scores
        s = _dot(q1, tl.trans(k1), _tile_bias(tb_base, offs_m[:, None], offs_n[None, :], s_tb, T),
                 INTERP)
    else:
        s = _dot(q1, tl.trans(k1), None, INTERP)
    if USE_REC:
        # second bilinear score: S2_ij = q2_i . k2_j (the reciprocal term in canonical RA)
        k2 = _load_rows(k2_base, offs_n, offs_d2, s_k2, T, D2, BD2, MASK_N)
        if HAS_BAND:
            # m_ij = [i - j < band]: zero the reciprocal term outside the band
            s2 = _dot(q2, tl.trans(k2), None, INTERP)
            s += tl.where((offs_m[:, None] - offs_n[None, :]) < band, s2, 0.0)
        else:
            s = _dot(q2, tl.trans(k2), s, INTERP)
    if HAS_BIAS:
        # column bias bias_j, the same for every query row
        s += _key_bias(b_base, k1, offs_n, T, HAS_BIAS, MASK_N)[None, :]
    s = s * LOG2E  # base-2 logits
    if CAUSAL:
        # diagonal tile: keys after the query are -inf (this also hides keys >= T from
        # every real row i < T)
        s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
    # online softmax: new running max, rescale the old sum and accumulator
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = _load_rows(v_base, offs_n, offs_dv, s_v, T, DV, BDV, MASK_N)
    acc = acc * alpha[:, None]
    acc = _dot(p.to(v.dtype), v, acc, INTERP)  # O += P V
    return acc, m_new, l_i


@triton.jit
def _fwd_stage(acc, m_i, l_i, q1, q2, offs_m,
               k1_base, k2_base, v_base, b_base, s_k1, s_k2, s_v,
               lo, hi, T, band, tb_base, s_tb,
               BLOCK_N: tl.constexpr,
               D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
               DV: tl.constexpr, BDV: tl.constexpr,
               USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
               HAS_TBIAS: tl.constexpr,
               CAUSAL: tl.constexpr, MASK_N: tl.constexpr, INTERP: tl.constexpr):
    """Key blocks [lo, hi) in steps of BLOCK_N.  INTERP (interpreter only): a while loop,
    because the interpreter cannot turn program-id-derived bounds into a Python range."""
    if INTERP:
        n0 = lo
        while n0 < hi:
            acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q1, q2, offs_m, n0, k1_base, k2_base,
                                      v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
                                      BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                      USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL, MASK_N,
                                      INTERP)
            n0 += BLOCK_N
    else:
        for n0 in range(lo, hi, BLOCK_N):
            acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q1, q2, offs_m, n0, k1_base, k2_base,
                                      v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
                                      BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                      USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL, MASK_N,
                                      INTERP)
    return acc, m_i, l_i


@triton.jit
def _ra_fwd_kernel(Q1, K1, Q2, K2, V, BIAS, SC1, SC2, O, LSE,
                   sq1b, sq1h, sq1t, sk1b, sk1h, sk1t,
                   sq2b, sq2h, sq2t, sk2b, sk2h, sk2t,
                   svb, svh, svt, sob, soh, sot,
                   H, T, band, TBIAS, stbh, stbt,
                   D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
                   DV: tl.constexpr, BDV: tl.constexpr,
                   HAS_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_SCALE: tl.constexpr, HAS_TBIAS: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   INTERP: tl.constexpr = False):
    # Grid (batch*heads, query blocks), axis 0 fastest: all heads' last (heaviest: most key
    # blocks under causality) query blocks launch first, the light ones fill the tail.
    pid_bh = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)

    q1 = _load_rows(Q1 + b * sq1b + h * sq1h, offs_m, offs_d1, sq1t, T, D1, BD1, True)
    if HAS_REC:
        q2 = _load_rows(Q2 + b * sq2b + h * sq2h, offs_m, offs_d2, sq2t, T, D2, BD2, True)
    else:
        q2 = q1  # unused
    q1, q2 = _scale_rows(q1, q2, SC1, SC2, h, HAS_REC, HAS_SCALE)
    k1_base = K1 + b * sk1b + h * sk1h
    k2_base = K2 + b * sk2b + h * sk2h
    v_base = V + b * svb + h * svh
    b_base = _bias_source(BIAS, pid_bh.to(tl.int64), h, T, offs_d1, D1, HAS_BIAS)
    tb_base = TBIAS + h * stbh

    acc = tl.zeros([BLOCK_M, BDV], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # Key blocks [0, m0) lie wholly below the diagonal (every j < m0 <= i): no causal mask,
    # no key bounds mask.  With a band, blocks before n_lo have every i - j >= band for all
    # rows i >= m0, so they skip the second score product.
    if HAS_REC:
        if HAS_BAND:
            n_lo = tl.maximum(m0 - band + 1, 0) // BLOCK_N * BLOCK_N
            n_lo = tl.minimum(n_lo, m0)
            acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q1, q2, offs_m, k1_base, k2_base, v_base,
                                       b_base, sk1t, sk2t, svt, 0, n_lo, T, band, tb_base, stbt,
                                       BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                       False, HAS_BAND, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
        else:
            n_lo = 0
        acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q1, q2, offs_m, k1_base, k2_base, v_base,
                                   b_base, sk1t, sk2t, svt, n_lo, m0, T, band, tb_base, stbt,
                                   BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                   True, HAS_BAND, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
    else:
        acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q1, q2, offs_m, k1_base, k2_base, v_base,
                                   b_base, sk1t, sk2t, svt, 0, m0, T, band, tb_base, stbt,
                                   BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                   False, False, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
    # Diagonal key blocks [m0, m0 + BLOCK_M) (cut at T): causal mask + ragged key mask.
    # Key blocks past the diagonal are never visited (fully masked under causality).
    acc, m_i, l_i = _fwd_stage(acc, m_i, l_i, q1, q2, offs_m, k1_base, k2_base, v_base,
                               b_base, sk1t, sk2t, svt, m0, tl.minimum(m0 + BLOCK_M, T), T,
                               band, tb_base, stbt, BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                               HAS_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, True, True, INTERP)

    # Every row i < T sees key j = i, so l_i > 0 and m_i is finite.
    # lse2_i = log2(sum_j exp2(L_ij*log2 e)) = m_i + log2(l_i): saved for the backward.
    acc = acc / l_i[:, None]
    _store_rows(O + b * sob + h * soh, acc.to(O.dtype.element_ty), offs_m, offs_dv, sot, T,
                DV, BDV)
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_i), mask=offs_m < T)


# ----------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------
@triton.jit
def _ra_delta_kernel(O, DO, DELTA, sob, soh, sot, sdob, sdoh, sdot, H, T,
                     DV: tl.constexpr, BDV: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij  (since O_i = sum_j P_ij v_j and
    # dP_ij = dO_i . v_j); dL_ij = P_ij (dP_ij - delta_i) is the softmax backward.
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BDV)
    o = _load_rows(O + b * sob + h * soh, offs_m, offs_dv, sot, T, DV, BDV, True)
    do = _load_rows(DO + b * sdob + h * sdoh, offs_m, offs_dv, sdot, T, DV, BDV, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * T + offs_m, delta, mask=offs_m < T)


@triton.jit
def _dkdv_tile(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n, m0,
               q1_base, q2_base, do_base, lse_base, delta_base, s_q1, s_q2, s_do, T, band,
               dqa_base, dqb_base, s_dqa, s_dqb, tb_base, s_tb,
               BLOCK_M: tl.constexpr,
               D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
               DV: tl.constexpr, BDV: tl.constexpr,
               USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
               HAS_TBIAS: tl.constexpr,
               CAUSAL: tl.constexpr, ROW_ATOMIC: tl.constexpr, INTERP: tl.constexpr):
    """Column-side sums of one key block against query block [m0, m0 + BLOCK_M).

    Works in the transposed orientation (rows = keys j, columns = queries i), so that
    every accumulated product has the key block as its M dimension:
        dv_j   += sum_i P_ij dO_i
        dk1_j  += sum_i dL_ij q1_i
        dk2_j  += sum_i m_ij dL_ij q2_i
        dbias_j += sum_i dL_ij
    ROW_ATOMIC (one-pass backward): also the row side of the same dL tile, added with fp32
    atomics into the query block's rows of the accumulators at dqa_base, dqb_base:
        dq1_i  += sum_j dL_ij k1_j          dq2_i  += sum_j m_ij dL_ij k2_j
    (k1, k2 carry the per-head scales, so these are the gradients of the raw q1, q2).
    Query rows >= T read lse = +inf, so their P is exactly 0 and they add nothing.
    """
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    q1 = _load_rows(q1_base, offs_m, offs_d1, s_q1, T, D1, BD1, True)
    # L^T_ji = k1_j . q1_i  (+ m_ij k2_j . q2_i) (+ bias_j), recomputed in fp32
    if HAS_TBIAS:  # R^T_ji as the accumulator (the tile bias, read transposed)
        sT = _dot(k1, tl.trans(q1), _tile_bias(tb_base, offs_m[None, :], offs_n[:, None], s_tb, T),
                  INTERP)
    else:
        sT = _dot(k1, tl.trans(q1), None, INTERP)
    if USE_REC:
        q2 = _load_rows(q2_base, offs_m, offs_d2, s_q2, T, D2, BD2, True)
        if HAS_BAND:
            in_band = (offs_m[None, :] - offs_n[:, None]) < band
            sT += tl.where(in_band, _dot(k2, tl.trans(q2), None, INTERP), 0.0)
        else:
            sT = _dot(k2, tl.trans(q2), sT, INTERP)
    if HAS_BIAS:
        sT += bias_n[:, None]
    sT = sT * LOG2E
    if CAUSAL:
        sT = tl.where(offs_m[None, :] >= offs_n[:, None], sT, float("-inf"))
    lse = tl.load(lse_base + offs_m, mask=offs_m < T, other=float("inf"))
    # P_ij = exp2(L_ij log2 e - lse2_i): the forward's softmax, no renormalisation needed
    pT = tl.exp2(sT - lse[None, :])
    do = _load_rows(do_base, offs_m, offs_dv, s_do, T, DV, BDV, True)
    dv = _dot(pT.to(do.dtype), do, dv, INTERP)                     # dv_j += sum_i P_ij dO_i
    delta = tl.load(delta_base + offs_m, mask=offs_m < T, other=0.0)
    dpT = _dot(v, tl.trans(do), None, INTERP)                            # dP_ij = dO_i . v_j
    dsT = pT * (dpT - delta[None, :])                        # dL_ij = P_ij (dP_ij - delta_i)
    ds = dsT.to(q1.dtype)                        # the products' operand (q and k share a dtype)
    dk1 = _dot(ds, q1, dk1, INTERP)                                # dk1_j += sum_i dL_ij q1_i
    if ROW_ATOMIC:
        # dq1_i = sum_j dL_ij k1_j: this key block's share, added to the row's accumulator
        _atomic_add_rows(dqa_base, _dot(tl.trans(ds), k1, None, INTERP),
                         offs_m, offs_d1, s_dqa, T, D1, BD1)
    if HAS_BIAS:
        dbias += tl.sum(dsT, 1)                              # dbias_j = sum_i dL_ij
    if USE_REC:
        if HAS_BAND:
            ds = tl.where(in_band, dsT, 0.0).to(q2.dtype)    # m_ij dL_ij
        dk2 = _dot(ds, q2, dk2, INTERP)                            # dk2_j += sum_i m_ij dL_ij q2_i
        if ROW_ATOMIC:
            # dq2_i = sum_j m_ij dL_ij k2_j, likewise
            _atomic_add_rows(dqb_base, _dot(tl.trans(ds), k2, None, INTERP),
                             offs_m, offs_d2, s_dqb, T, D2, BD2)
    return dk1, dk2, dv, dbias


@triton.jit
def _dkdv_stage(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n,
                q1_base, q2_base, do_base, lse_base, delta_base, s_q1, s_q2, s_do,
                lo, hi, T, band, dqa_base, dqb_base, s_dqa, s_dqb, tb_base, s_tb,
                BLOCK_M: tl.constexpr,
                D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
                DV: tl.constexpr, BDV: tl.constexpr,
                USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_TBIAS: tl.constexpr,
                CAUSAL: tl.constexpr, ROW_ATOMIC: tl.constexpr, INTERP: tl.constexpr):
    """Query blocks [lo, hi) in steps of BLOCK_M for one key block."""
    if INTERP:
        m0 = lo
        while m0 < hi:
            dk1, dk2, dv, dbias = _dkdv_tile(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n, m0,
                                             q1_base, q2_base, do_base, lse_base, delta_base,
                                             s_q1, s_q2, s_do, T, band,
                                             dqa_base, dqb_base, s_dqa, s_dqb, tb_base, s_tb,
                                             BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                             USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL,
                                             ROW_ATOMIC, INTERP)
            m0 += BLOCK_M
    else:
        for m0 in range(lo, hi, BLOCK_M):
            dk1, dk2, dv, dbias = _dkdv_tile(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n, m0,
                                             q1_base, q2_base, do_base, lse_base, delta_base,
                                             s_q1, s_q2, s_do, T, band,
                                             dqa_base, dqb_base, s_dqa, s_dqb, tb_base, s_tb,
                                             BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                             USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL,
                                             ROW_ATOMIC, INTERP)
    return dk1, dk2, dv, dbias


@triton.jit
def _ra_dkdv_kernel(Q1, K1, Q2, K2, V, BIAS, SC1, SC2, DO, LSE, DELTA,
                    DK1, DK2, DVo, DBIAS, BROW, DQ1A, DQ2A, DSC,
                    sq1b, sq1h, sq1t, sk1b, sk1h, sk1t,
                    sq2b, sq2h, sq2t, sk2b, sk2h, sk2t,
                    svb, svh, svt, sdob, sdoh, sdot,
                    H, T, band, TBIAS, stbh, stbt,
                    D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
                    DV: tl.constexpr, BDV: tl.constexpr,
                    HAS_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_SCALE: tl.constexpr, HAS_TBIAS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    ROW_ATOMIC: tl.constexpr = False, TIED: tl.constexpr = False,
                    INTERP: tl.constexpr = False):
    # One program owns key block [n0, n0 + BLOCK_N) of one (b, h); BLOCK_N % BLOCK_M == 0.
    # ROW_ATOMIC (the one-pass backward): the row side too, atomically added into the fp32
    # accumulators DQ1A (dL/dq1) and DQ2A (dL/dq2), (B, T, H, D) memory, zeroed by the caller;
    # the scales' gradients go to DSC per key row.  TIED (with ROW_ATOMIC): canonical RA's
    # q2 = k1, k2 = q1, so DQ1A collects q's whole gradient and DQ2A k's (see the epilogue).
    # Grid (batch*heads, key blocks), axis 0 fastest: key block 0 (the most query blocks
    # under causality) of every head launches first.
    pid_bh = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    bh = pid_bh.to(tl.int64)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)

    k1 = _load_rows(K1 + b * sk1b + h * sk1h, offs_n, offs_d1, sk1t, T, D1, BD1, True)
    if HAS_BIAS:
        # from the raw key tile (form 2), before the scale below
        bias_n = _key_bias(_bias_source(BIAS, bh, h, T, offs_d1, D1, HAS_BIAS), k1, offs_n, T,
                           HAS_BIAS, True)
        if HAS_BIAS == 2 and not ROW_ATOMIC:
            # this program owns keys offs_n: their bias row, for the dq kernel to read (form 1
            # there: no per-tile products in the kernel with the least registers to spare)
            tl.store(BROW + bh * T + offs_n, bias_n, mask=offs_n < T)
    else:
        bias_n = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_REC:
        k2 = _load_rows(K2 + b * sk2b + h * sk2h, offs_n, offs_d2, sk2t, T, D2, BD2, True)
    else:
        k2 = k1  # unused
    # With scales, L_ij = sc1 q1_i.k1_j + sc2 m_ij q2_i.k2_j + bias_j: the key tiles are used
    # in the scores only, so they carry the scales (sc1 k1_j, sc2 k2_j), and the raw q tiles
    # the inner loop loads give dk1_j = sc1 sum_i dL_ij q1_i after one final multiply.
    k1, k2 = _scale_rows(k1, k2, SC1, SC2, h, HAS_REC, HAS_SCALE)
    v = _load_rows(V + b * svb + h * svh, offs_n, offs_dv, svt, T, DV, BDV, True)

    dk1 = tl.zeros([BLOCK_N, BD1], dtype=tl.float32)
    dk2 = tl.zeros([BLOCK_N, BD2], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BDV], dtype=tl.float32)
    dbias = tl.zeros([BLOCK_N], dtype=tl.float32)

    q1_base = Q1 + b * sq1b + h * sq1h
    q2_base = Q2 + b * sq2b + h * sq2h
    do_base = DO + b * sdob + h * sdoh
    lse_base = LSE + bh * T
    delta_base = DELTA + bh * T
    # the row-side accumulators' rows of (b, h): (B, T, H, D) memory like every gradient
    dqa_base = DQ1A + (b * T * H + h) * D1
    dqb_base = DQ2A + (b * T * H + h) * D2
    tb_base = TBIAS + h * stbh

    # Diagonal query blocks [n0, n0 + BLOCK_N): causal mask (queries before n0 never see
    # these keys, so they are skipped outright).
    d_hi = tl.minimum(n0 + BLOCK_N, T)
    dk1, dk2, dv, dbias = _dkdv_stage(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n,
                                      q1_base, q2_base, do_base, lse_base, delta_base,
                                      sq1t, sq2t, sdot, n0, d_hi, T, band,
                                      dqa_base, dqb_base, H * D1, H * D2, tb_base, stbt,
                                      BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                      HAS_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, True, ROW_ATOMIC,
                                      INTERP)
    # Query blocks below the diagonal: every i >= n0 + BLOCK_N > j, no causal mask.
    lo = n0 + BLOCK_N
    if HAS_REC:
        if HAS_BAND:
            # Query block [m0, m0+BLOCK_M) has some i - j < band iff m0 - (n0+BLOCK_N-1) < band,
            # i.e. for the first cdiv(band - 1, BLOCK_M) blocks after lo; later blocks are
            # wholly outside the band and skip the second score product (and dk2).
            r_hi = tl.minimum(lo + tl.cdiv(band - 1, BLOCK_M) * BLOCK_M, T)
            r_hi = tl.maximum(r_hi, lo)
        else:
            r_hi = T
        dk1, dk2, dv, dbias = _dkdv_stage(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n,
                                          q1_base, q2_base, do_base, lse_base, delta_base,
                                          sq1t, sq2t, sdot, lo, r_hi, T, band,
                                          dqa_base, dqb_base, H * D1, H * D2, tb_base, stbt,
                                          BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                          True, HAS_BAND, HAS_BIAS, HAS_TBIAS, False, ROW_ATOMIC,
                                          INTERP)
        if HAS_BAND:
            dk1, dk2, dv, dbias = _dkdv_stage(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n,
                                              q1_base, q2_base, do_base, lse_base, delta_base,
                                              sq1t, sq2t, sdot, r_hi, T, T, band,
                                              dqa_base, dqb_base, H * D1, H * D2, tb_base, stbt,
                                              BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                              False, HAS_BAND, HAS_BIAS, HAS_TBIAS, False,
                                              ROW_ATOMIC, INTERP)
    else:
        dk1, dk2, dv, dbias = _dkdv_stage(dk1, dk2, dv, dbias, k1, k2, v, bias_n, offs_n,
                                          q1_base, q2_base, do_base, lse_base, delta_base,
                                          sq1t, sq2t, sdot, lo, T, T, band,
                                          dqa_base, dqb_base, H * D1, H * D2, tb_base, stbt,
                                          BLOCK_M, D1, BD1, D2, BD2, DV, BDV,
                                          False, False, HAS_BIAS, HAS_TBIAS, False, ROW_ATOMIC,
                                          INTERP)

    if HAS_SCALE:
        if ROW_ATOMIC:
            # The scales' gradients, with no dq kernel to form them from the rows:
            #   dL/dsc1 = sum_ij dL_ij q1_i . k1_j = sum_j k1_j . dk1_j     (raw q1, k1, and dk1
            # before its scale: the loop summed the raw q1 rows); likewise sc2 with k2, dk2.
            # Per-key-row sums to DSC (B, H, T, 2), summed by the op: no atomics here.
            dsc_ptr = DSC + (bh * T + offs_n) * 2
            k1r = _load_rows(K1 + b * sk1b + h * sk1h, offs_n, offs_d1, sk1t, T, D1, BD1, True)
            tl.store(dsc_ptr, tl.sum(k1r.to(tl.float32) * dk1, axis=1), mask=offs_n < T)
            if HAS_REC:
                k2r = _load_rows(K2 + b * sk2b + h * sk2h, offs_n, offs_d2, sk2t, T, D2, BD2,
                                 True)
                tl.store(dsc_ptr + 1, tl.sum(k2r.to(tl.float32) * dk2, axis=1), mask=offs_n < T)
        dk1 = dk1 * tl.load(SC1 + h)
        if HAS_REC:
            dk2 = dk2 * tl.load(SC2 + h)
    if HAS_BIAS == 2:
        # the bias path: bias_j = k1_j . u, so dL/dk1_j gains dbias_j u
        dk1 += dbias[:, None] * _bias_source(BIAS, bh, h, T, offs_d1, D1, HAS_BIAS)[None, :]
    # Gradient outputs live in (B, T, H, D) memory (row (b, t, h) at (b*T*H + t*H + h)*D), the
    # order of the model's qkv projection, so assembling dqkv needs no transpose; dbias is
    # contiguous (B, H, T).
    if ROW_ATOMIC and TIED:
        # Canonical RA (q2 = k1 = k, k2 = q1 = q): dL/dq_j = dq1_j + dk2_j and
        # dL/dk_j = dk1_j + dq2_j.  Other programs add the row sides dq1, dq2 of rows j to the
        # same accumulators, so this program's column sides go in atomically too: dk2 into
        # q's accumulator DQ1A, dk1 into k's DQ2A.
        _atomic_add_rows(dqa_base, dk2, offs_n, offs_d1, H * D1, T, D1, BD1)
        _atomic_add_rows(dqb_base, dk1, offs_n, offs_d1, H * D1, T, D1, BD1)
    else:
        _store_rows(DK1 + (b * T * H + h) * D1, dk1.to(DK1.dtype.element_ty), offs_n, offs_d1,
                    H * D1, T, D1, BD1)
        if HAS_REC:
            _store_rows(DK2 + (b * T * H + h) * D2, dk2.to(DK2.dtype.element_ty), offs_n,
                        offs_d2, H * D2, T, D2, BD2)
    _store_rows(DVo + (b * T * H + h) * DV, dv.to(DVo.dtype.element_ty), offs_n, offs_dv,
                H * DV, T, DV, BDV)
    if HAS_BIAS:
        tl.store(DBIAS + bh * T + offs_n, dbias, mask=offs_n < T)


@triton.jit
def _dq_tile(dq1, dq2, q1, q2, do, lse, delta, offs_m, n0,
             k1_base, k2_base, v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
             BLOCK_N: tl.constexpr,
             D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
             DV: tl.constexpr, BDV: tl.constexpr,
             USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
             HAS_TBIAS: tl.constexpr,
             CAUSAL: tl.constexpr, MASK_N: tl.constexpr, INTERP: tl.constexpr):
    """Row-side sums of one query block against key block [n0, n0 + BLOCK_N):
        dq1_i += sum_j dL_ij k1_j          dq2_i += sum_j m_ij dL_ij k2_j
    """
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    k1 = _load_rows(k1_base, offs_n, offs_d1, s_k1, T, D1, BD1, MASK_N)
    if HAS_TBIAS:                                                         # (R_ij +) q1_i . k1_j
        s = _dot(q1, tl.trans(k1), _tile_bias(tb_base, offs_m[:, None], offs_n[None, :], s_tb, T),
                 INTERP)
    else:
        s = _dot(q1, tl.trans(k1), None, INTERP)
    if USE_REC:
        k2 = _load_rows(k2_base, offs_n, offs_d2, s_k2, T, D2, BD2, MASK_N)
        if HAS_BAND:
            in_band = (offs_m[:, None] - offs_n[None, :]) < band
            s += tl.where(in_band, _dot(q2, tl.trans(k2), None, INTERP), 0.0)
        else:
            s = _dot(q2, tl.trans(k2), s, INTERP)                   # + q2_i . k2_j
    if HAS_BIAS:
        s += _key_bias(b_base, k1, offs_n, T, HAS_BIAS, MASK_N)[None, :]
    s = s * LOG2E
    if CAUSAL:
        s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
    p = tl.exp2(s - lse[:, None])                             # P_ij from the saved lse
    v = _load_rows(v_base, offs_n, offs_dv, s_v, T, DV, BDV, MASK_N)
    dp = _dot(do, tl.trans(v), None, INTERP)                              # dP_ij = dO_i . v_j
    ds = p * (dp - delta[:, None])                            # dL_ij
    dq1 = _dot(ds.to(k1.dtype), k1, dq1, INTERP)                    # dq1_i += sum_j dL_ij k1_j
    if USE_REC:
        if HAS_BAND:
            ds = tl.where(in_band, ds, 0.0)
        dq2 = _dot(ds.to(k2.dtype), k2, dq2, INTERP)                # dq2_i += sum_j m_ij dL_ij k2_j
    return dq1, dq2


@triton.jit
def _dq_stage(dq1, dq2, q1, q2, do, lse, delta, offs_m,
              k1_base, k2_base, v_base, b_base, s_k1, s_k2, s_v,
              lo, hi, T, band, tb_base, s_tb,
              BLOCK_N: tl.constexpr,
              D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
              DV: tl.constexpr, BDV: tl.constexpr,
              USE_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_TBIAS: tl.constexpr,
              CAUSAL: tl.constexpr, MASK_N: tl.constexpr, INTERP: tl.constexpr):
    """Key blocks [lo, hi) in steps of BLOCK_N for one query block."""
    if INTERP:
        n0 = lo
        while n0 < hi:
            dq1, dq2 = _dq_tile(dq1, dq2, q1, q2, do, lse, delta, offs_m, n0, k1_base, k2_base,
                                v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
                                BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL, MASK_N, INTERP)
            n0 += BLOCK_N
    else:
        for n0 in range(lo, hi, BLOCK_N):
            dq1, dq2 = _dq_tile(dq1, dq2, q1, q2, do, lse, delta, offs_m, n0, k1_base, k2_base,
                                v_base, b_base, s_k1, s_k2, s_v, T, band, tb_base, s_tb,
                                BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                USE_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, CAUSAL, MASK_N, INTERP)
    return dq1, dq2


@triton.jit
def _ra_dq_kernel(Q1, K1, Q2, K2, V, BIAS, SC1, SC2, DO, LSE, DELTA, DQ1, DQ2, DK1, DK2, DSC,
                  sq1b, sq1h, sq1t, sk1b, sk1h, sk1t,
                  sq2b, sq2h, sq2t, sk2b, sk2h, sk2t,
                  svb, svh, svt, sdob, sdoh, sdot,
                  H, T, band, TBIAS, stbh, stbt,
                  D1: tl.constexpr, BD1: tl.constexpr, D2: tl.constexpr, BD2: tl.constexpr,
                  DV: tl.constexpr, BDV: tl.constexpr,
                  HAS_REC: tl.constexpr, HAS_BAND: tl.constexpr, HAS_BIAS: tl.constexpr,
                  HAS_SCALE: tl.constexpr, TIED: tl.constexpr, HAS_TBIAS: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  INTERP: tl.constexpr = False):
    # One program owns query block [m0, m0 + BLOCK_M) of one (b, h); BLOCK_M % BLOCK_N == 0.
    # Launched after the dkdv kernel: with TIED it reads that kernel's dk1, dk2 rows (below).
    # Heavy-first order as in the forward: last query blocks (most key blocks) launch first.
    pid_bh = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    bh = pid_bh.to(tl.int64)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d1 = tl.arange(0, BD1)
    offs_d2 = tl.arange(0, BD2)
    offs_dv = tl.arange(0, BDV)

    q1 = _load_rows(Q1 + b * sq1b + h * sq1h, offs_m, offs_d1, sq1t, T, D1, BD1, True)
    if HAS_REC:
        q2 = _load_rows(Q2 + b * sq2b + h * sq2h, offs_m, offs_d2, sq2t, T, D2, BD2, True)
    else:
        q2 = q1  # unused
    # the scaled tiles feed the scores only; dq1 = sum_j dL_ij k1_j is the gradient with
    # respect to the SCALED q1 (the epilogue applies the chain rule to the scale and raw q1)
    q1, q2 = _scale_rows(q1, q2, SC1, SC2, h, HAS_REC, HAS_SCALE)
    do = _load_rows(DO + b * sdob + h * sdoh, offs_m, offs_dv, sdot, T, DV, BDV, True)
    # rows >= T: lse = +inf makes P = 0 there (their results are not stored anyway)
    lse = tl.load(LSE + bh * T + offs_m, mask=offs_m < T, other=float("inf"))
    delta = tl.load(DELTA + bh * T + offs_m, mask=offs_m < T, other=0.0)

    k1_base = K1 + b * sk1b + h * sk1h
    k2_base = K2 + b * sk2b + h * sk2h
    v_base = V + b * svb + h * svh
    b_base = _bias_source(BIAS, bh, h, T, offs_d1, D1, HAS_BIAS)
    tb_base = TBIAS + h * stbh

    dq1 = tl.zeros([BLOCK_M, BD1], dtype=tl.float32)
    dq2 = tl.zeros([BLOCK_M, BD2], dtype=tl.float32)

    # same key-block schedule as the forward: [0, n_lo) without the reciprocal product,
    # [n_lo, m0) with it, then the diagonal blocks with the causal mask
    if HAS_REC:
        if HAS_BAND:
            n_lo = tl.maximum(m0 - band + 1, 0) // BLOCK_N * BLOCK_N
            n_lo = tl.minimum(n_lo, m0)
            dq1, dq2 = _dq_stage(dq1, dq2, q1, q2, do, lse, delta, offs_m, k1_base, k2_base,
                                 v_base, b_base, sk1t, sk2t, svt, 0, n_lo, T, band, tb_base, stbt,
                                 BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                                 False, HAS_BAND, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
        else:
            n_lo = 0
        dq1, dq2 = _dq_stage(dq1, dq2, q1, q2, do, lse, delta, offs_m, k1_base, k2_base,
                             v_base, b_base, sk1t, sk2t, svt, n_lo, m0, T, band, tb_base, stbt,
                             BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                             True, HAS_BAND, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
    else:
        dq1, dq2 = _dq_stage(dq1, dq2, q1, q2, do, lse, delta, offs_m, k1_base, k2_base,
                             v_base, b_base, sk1t, sk2t, svt, 0, m0, T, band, tb_base, stbt,
                             BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                             False, False, HAS_BIAS, HAS_TBIAS, False, False, INTERP)
    dq1, dq2 = _dq_stage(dq1, dq2, q1, q2, do, lse, delta, offs_m, k1_base, k2_base,
                         v_base, b_base, sk1t, sk2t, svt, m0, tl.minimum(m0 + BLOCK_M, T), T,
                         band, tb_base, stbt, BLOCK_N, D1, BD1, D2, BD2, DV, BDV,
                         HAS_REC, HAS_BAND, HAS_BIAS, HAS_TBIAS, True, True, INTERP)

    if HAS_SCALE:
        # Chain rule through the per-head scales (x_s = sc[h] x, dq the gradient w.r.t. x_s):
        #   dL/dq1 = sc1 dq1        dL/dsc1 = sum_{b, t, d} q1 . dq1     (q1 raw; same for 2)
        # Each program writes its rows' sums over d to DSC (B, H, T, 2); the op sums over b
        # and t (no atomics, so the result does not depend on the launch order).
        q1r = _load_rows(Q1 + b * sq1b + h * sq1h, offs_m, offs_d1, sq1t, T, D1, BD1, True)
        dsc_ptr = DSC + (bh * T + offs_m) * 2
        tl.store(dsc_ptr, tl.sum(q1r.to(tl.float32) * dq1, axis=1), mask=offs_m < T)
        dq1 = dq1 * tl.load(SC1 + h)
        if HAS_REC:
            q2r = _load_rows(Q2 + b * sq2b + h * sq2h, offs_m, offs_d2, sq2t, T, D2, BD2, True)
            tl.store(dsc_ptr + 1, tl.sum(q2r.to(tl.float32) * dq2, axis=1), mask=offs_m < T)
            dq2 = dq2 * tl.load(SC2 + h)
    if TIED:
        # Canonical RA passes the same tensors twice: q2 = k1 (= k) and k2 = q1 (= q). The
        # whole gradients of q and k at these rows are then
        #   dL/dq_i = dL/dq1_i + dL/dk2_i        dL/dk_i = dL/dk1_i + dL/dq2_i
        # where dk1_i, dk2_i are the column-side sums the dkdv kernel wrote for key i (true
        # gradients, bf16).  This program owns rows [m0, m0 + BLOCK_M) of both, so it adds
        # them here and stores dq into DQ1, dk into DQ2: no separate assembly pass reads the
        # four partial gradients again.
        dq1 += _load_rows(DK2 + (b * T * H + h) * D1, offs_m, offs_d1, H * D1, T, D1, BD1,
                          True).to(tl.float32)
        dq2 += _load_rows(DK1 + (b * T * H + h) * D1, offs_m, offs_d1, H * D1, T, D1, BD1,
                          True).to(tl.float32)

    # (B, T, H, D) memory, as in the dkdv kernel
    _store_rows(DQ1 + (b * T * H + h) * D1, dq1.to(DQ1.dtype.element_ty), offs_m, offs_d1,
                H * D1, T, D1, BD1)
    if HAS_REC:
        _store_rows(DQ2 + (b * T * H + h) * D2, dq2.to(DQ2.dtype.element_ty), offs_m, offs_d2,
                    H * D2, T, D2, BD2)
