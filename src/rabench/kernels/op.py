"""torch.library ops around the Triton RA kernels, their autograd, and the public entry point.

Ops (torch.library.triton_op on a GPU: torch.compile sees the Triton kernels inside them):
    rabench::ra_fwd(q1, k1, q2?, k2?, v, bias?, sc1?, sc2?, band, tied, tbias?) -> (o, lse)
    rabench::ra_bwd(do, q1, k1, q2?, k2?, v, bias?, sc1?, sc2?, o, lse, band, tied, tbias?)
        -> (dq1, dk1, dq2, dk2, dv, dbias, dscale)     (empty tensors for absent inputs)
tbias is the tile bias R (H, T, T) added to every batch element's logits (ra_flash's HAS_TBIAS);
it gets no gradient.
`band` is an int; 0 means "no band" (the public wrapper maps None and band >= T to 0).
`tied` is canonical RA's reciprocal term on the first pair itself (q2 = k1, k2 = q1; q2, k2
passed as None): the backward then returns the whole gradients of q1 and k1 in dq1, dk1.
The gradients are the true ones (the scales' chain rule runs in the kernels; dscale is (H, 2)).
ra_fwd carries the autograd formula (register_autograd), used alike in eager and compiled code.

Two backwards, one answer (tuning.backward_mode(), tuning.force_backward()):
    one-pass  the dkdv kernel alone: each program walks the query blocks below its key
              block once and, besides its column-side sums (dk, dv, dbias), adds the row side of
              the same dL tile (dq1, dq2; tied: into q's and k's whole gradients) into float32
              accumulators with atomics, as FlashAttention-2 and -3 do for dQ.  Tile products
              per causal pair, forward included: 11 for canonical RA (tied), 7 without the
              reciprocal term - the counts notes/ra-math.md derives (cuDNN's SDPA does 7).
    two-pass  (default) the dkdv kernel, then a dq kernel that owns each query block's rows: no
              atomics, each output written by one program, bitwise the same from run to run;
              it recomputes both score products and dP for the row side (14 products for RA,
              9 without it).
Two-pass is the default because it measured faster, not only because it is exact: on an H100
(benchmarks/backward_modes.py, results/bench/h100-2026-12-06) fwd+bwd at B*T = 8192, D = 64
took 1.44-1.50x cuDNN's time without the reciprocal term and 1.91x with it two-pass, against
1.94-2.02x and 2.63-2.93x one-pass: the fp32 tile atomics (one BLOCK_M x D tile per query block
per key block, two for tied RA) cost more than the products they save.  Float atomics also add
in whatever order the programs reach them, so one-pass gradients differ from run to run in the
last bits; two-pass is bitwise repeatable.  force_backward("one-pass") selects the atomic
backward (benchmarks time the two in one process).  (Adding the row sides with
Hopper's bulk TMA reduce instead, as FlashAttention-3 does for dQ, measured no faster: v10 in
notes/kernel-versions.md.)  The mode is read when the backward runs, or when torch.compile
traces it (the compiled graph keeps the mode it was traced with).

The pieces around these ops: tuning.py (tiles, backward mode), launching.py (how a kernel is
launched: traced, kept binary, interpreted), buffers.py (output tensors), eager_gated.py
(canonical RA straight from its gate logits, eager).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from rabench.errors import RabenchError

from . import buffers, launching, tuning
from . import ra_flash as K
from .buffers import bht_strides, pow2, unit_last

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------
# availability
# ----------------------------------------------------------------------------------------
_UNAVAILABLE = "ra-triton needs a CUDA GPU; set TRITON_INTERPRET=1 to run it (slowly) on the CPU"


def ra_attention_available() -> tuple[bool, str]:
    """(True, "") when the kernels can run: a CUDA GPU, or Triton's interpreter (CPU)."""
    if K.INTERPRET:
        return True, ""
    if torch.cuda.is_available():
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False, ("TRITON_INTERPRET=1 was set after rabench.kernels was imported; "
                       "set it before the first import")
    return False, _UNAVAILABLE


def check_device(t: Tensor) -> None:
    if K.INTERPRET:
        if t.device.type != "cpu":
            raise RabenchError(f"ra-triton runs under TRITON_INTERPRET=1 on CPU tensors, "
                               f"got a tensor on {t.device}")
        return
    if t.device.type != "cuda":
        ok, why = ra_attention_available()
        raise RabenchError(why if not ok else
                           f"ra-triton needs CUDA tensors, got a tensor on {t.device}; "
                           "set TRITON_INTERPRET=1 to run it (slowly) on the CPU")


# ----------------------------------------------------------------------------------------
# the forward and the backward's two modes, as launches
# ----------------------------------------------------------------------------------------
def _launch_delta(o: Tensor, do: Tensor, delta: Tensor, H: int, T: int, meta: dict) -> None:
    """delta_i = rowsum(dO_i * O_i), one small launch before the two backward kernels."""
    blk = 16 if K.INTERPRET else 128
    bh = delta.shape[0] * delta.shape[1]
    launching.launch_untuned(K._ra_delta_kernel, ("delta", meta["DV"]), bh, T, blk,
                             (o, do, delta, *bht_strides(o, do), H, T),
                             dict(DV=meta["DV"], BDV=meta["BDV"], BLOCK_M=blk))


def _meta(q1, q2, v, bias, band, sc1, tbias) -> dict:
    D1 = q1.shape[-1]
    D2 = q2.shape[-1] if q2 is not None else 16
    DV = v.shape[-1]
    return dict(D1=D1, BD1=pow2(D1), D2=D2, BD2=pow2(D2), DV=DV, BDV=pow2(DV),
                HAS_REC=q2 is not None, HAS_BAND=band > 0, HAS_BIAS=_bias_form(bias),
                HAS_SCALE=sc1 is not None, HAS_TBIAS=tbias is not None)


def _bias_form(bias: Optional[Tensor]) -> int:
    """The kernels' HAS_BIAS: 0 none, 1 a (B, H, T) row per head, 2 a vector u (H, D1) with
    bias_j = k1_j . u computed in the kernels."""
    return 0 if bias is None else (2 if bias.dim() == 2 else 1)


def _tile_bias_args(tbias: Optional[Tensor], stand_in: Tensor) -> tuple:
    """The kernels' (TBIAS, head stride, row stride): the tile bias R (H, T, T) with a unit last
    stride (a slice of a larger cached pattern is read in place), or a stand-in never read."""
    if tbias is None:
        return (stand_in, 0, 0)
    tbias = unit_last(tbias)
    return (tbias, tbias.stride(0), tbias.stride(1))


def _reciprocal_pair(q1, k1, q2, k2, tied: bool):
    """The kernels' (q2, k2): canonical RA's tied pair reads q1 and k1 again, swapped."""
    return (k1, q1) if tied else (q2, k2)


def ra_forward(q1, k1, q2, k2, v, bias, sc1, sc2, band: int, tied: bool = False,
               tbias: Optional[Tensor] = None):
    """Returns (o, lse2): o (B, H, T, Dv) in v.dtype; lse2 (B, H, T) float32 in log2 units.
    sc1, sc2: per-head float32 scales (H,) of q1 and q2, or None; tbias: the tile bias (H, T, T)
    or None."""
    q1, k1, q2, k2, v = (unit_last(x) for x in (q1, k1, q2, k2, v))
    q2, k2 = _reciprocal_pair(q1, k1, q2, k2, tied)
    B, H, T, _ = q1.shape
    o = buffers.bthd(B, H, T, v.shape[-1], v)
    lse = buffers.empty((B, H, T), device=v.device, dtype=torch.float32)
    if T == 0 or B * H == 0:
        return o, lse
    # absent inputs: any read-only tensor stands in (the kernel never touches it)
    bias_c = bias.contiguous() if bias is not None else v
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    sc1_ = sc1.contiguous() if sc1 is not None else v
    sc2_ = sc2.contiguous() if (sc2 is not None and q2 is not None) else sc1_
    args = (q1, k1, q2_, k2_, v, bias_c, sc1_, sc2_, o, lse,
            *bht_strides(q1, k1, q2_, k2_, v, o),
            H, T, band, *_tile_bias_args(tbias, v))
    launching.launch("fwd", T, B * H, args, _meta(q1, q2, v, bias, band, sc1, tbias))
    return o, lse


def ra_backward(do, q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, band: int, tied: bool = False,
                rows: bool = False, tbias: Optional[Tensor] = None):
    """Gradients (dq1, dk1, dq2, dk2, dv, dbias, dscale), all true gradients: with scales
    the kernels apply the chain rule, and dscale (H, 2) holds dL/dsc1, dL/dsc2 (empty
    without scales).  tied: dq1 and dk1 are the whole gradients of q1 and k1 (each also
    played q2's or k2's part), assembled in the kernels; dq2, dk2 are empty.
    rows: dbias and dscale as the kernels leave them, per key row, (B, H, T) and (B, H, T, 2),
    for a caller that sums them itself (ra_gated_eager's gate kernel).
    One-pass or two-pass backward as tuning.backward_mode() says (module docstring)."""
    q1, k1, q2, k2, v, o, do = (unit_last(x) for x in (q1, k1, q2, k2, v, o, do))
    q2, k2 = _reciprocal_pair(q1, k1, q2, k2, tied)
    B, H, T, D1 = q1.shape
    f32 = dict(device=q1.device, dtype=torch.float32)
    # dL/dbias_j per key row, for either bias form (form 2, bias_j = k1_j . u, reduces it to
    # dL/du below; in the two-pass backward its dkdv kernel also writes the bias row, which the
    # dq kernel reads as form 1)
    from_k = _bias_form(bias) == 2
    dbias = buffers.empty((B, H, T), **f32) if bias is not None else buffers.absent(q1, torch.float32)
    # the scales' per-row partial sums (B, H, T, 2), summed below
    dsc = buffers.empty((B, H, T, 2), **f32) if sc1 is not None else buffers.absent(q1, torch.float32)
    dv = buffers.bthd(B, H, T, v.shape[-1], v)
    if T == 0 or B * H == 0:
        grads = (buffers.bthd(B, H, T, D1, q1), buffers.bthd(B, H, T, D1, k1),
                 buffers.bthd(B, H, T, q2.shape[-1], q2) if q2 is not None and not tied
                 else buffers.absent(q1),
                 buffers.bthd(B, H, T, k2.shape[-1], k2) if k2 is not None and not tied
                 else buffers.absent(q1), dv)
        if rows:
            return (*grads, dbias, dsc)
        dbias_out = torch.zeros_like(bias, dtype=torch.float32) if from_k else dbias
        return (*grads, dbias_out, q1.new_zeros((H, 2), dtype=torch.float32) if sc1 is not None else dsc)
    meta = _meta(q1, q2, v, bias, band, sc1, tbias)

    delta = buffers.empty((B, H, T), **f32)
    _launch_delta(o, do, delta, H, T, meta)

    # absent inputs: any read-only tensor stands in (the kernels never touch it); absent
    # outputs: buffers.scratch
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    sc1_ = sc1.contiguous() if sc1 is not None else lse
    sc2_ = sc2.contiguous() if (sc2 is not None and q2 is not None) else sc1_
    bias_c = bias.contiguous() if bias is not None else lse
    ins = (q1, k1, q2_, k2_, v, bias_c, sc1_, sc2_, do, lse, delta)
    strides = (*bht_strides(q1, k1, q2_, k2_, v, do), H, T, band, *_tile_bias_args(tbias, lse))
    outs = (dv, dbias if bias is not None else buffers.scratch(q1, torch.float32),
            dsc if sc1 is not None else buffers.scratch(q1, torch.float32))
    if tuning.backward_mode() == "one-pass":
        grads = _one_pass(ins, strides, outs, q2 is not None, tied, meta)
    else:
        grads = _two_pass(ins, strides, outs, q2 is not None, tied, from_k, meta)
    if rows:
        return (*grads, dbias, dsc)
    if from_k:  # bias_j = k1_j . u: dL/du = sum over b, j of dbias_j k1_j
        dbias = (dbias.unsqueeze(-1) * k1.float()).sum((0, 2))
    return (*grads, dbias, dsc.sum((0, 2)) if sc1 is not None else dsc)


_Grads = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # dq1, dk1, dq2, dk2, dv


def _one_pass(ins: tuple, strides: tuple, outs: tuple[Tensor, Tensor, Tensor], has_rec: bool,
              tied: bool, meta: dict) -> _Grads:
    """The dkdv kernel with ROW_ATOMIC.  ins: the kernels' inputs (q1 .. delta); outs: dv, dbias,
    dsc.  The row sides go into zeroed float32 accumulators in (B, T, H, D) memory, made here
    (under torch.compile the op's own fresh tensors, which the kernel mutates), then cast to the
    inputs' dtype with their strides (Tensor.to keeps the layout of a dense view)."""
    q1, k1, q2 = ins[0], ins[1], ins[2]
    B, H, T, D1 = q1.shape
    D2 = q2.shape[-1]
    acc1 = buffers.bthd_zeros(B, H, T, D1, q1)  # tied: q's whole gradient
    if tied:
        acc2 = buffers.bthd_zeros(B, H, T, D1, q1)  # k's whole gradient
        dk1, dk2 = buffers.scratch(q1), buffers.scratch(q1)  # the column sides go into acc1, acc2 too
    else:
        acc2 = buffers.bthd_zeros(B, H, T, D2, q1) if has_rec else buffers.scratch(q1, torch.float32)
        dk1 = buffers.bthd(B, H, T, D1, k1)
        dk2 = buffers.bthd(B, H, T, D2, q2) if has_rec else buffers.scratch(q1)
    dv, dbias, dsc = outs
    launching.launch("onepass", T, B * H,
            (*ins, dk1, dk2, dv, dbias, buffers.scratch(q1, torch.float32), acc1, acc2, dsc, *strides),
            dict(meta, ROW_ATOMIC=True, TIED=tied))
    if tied:
        return acc1.to(q1.dtype), acc2.to(k1.dtype), buffers.absent(q1), buffers.absent(q1), dv
    if not has_rec:
        return acc1.to(q1.dtype), dk1, buffers.absent(q1), buffers.absent(q1), dv
    return acc1.to(q1.dtype), dk1, acc2.to(q2.dtype), dk2, dv


def _two_pass(ins: tuple, strides: tuple, outs: tuple[Tensor, Tensor, Tensor], has_rec: bool,
              tied: bool, from_k: bool, meta: dict) -> _Grads:
    """The dkdv kernel (column sides), then the dq kernel (row sides, the scales' sums and, tied,
    the whole dq and dk): no atomics.  ins, outs as in _one_pass."""
    q1, k1, q2, k2, v, bias_c, sc1, sc2, do, lse, delta = ins
    B, H, T, D1 = q1.shape
    D2 = q2.shape[-1]
    dq1 = buffers.bthd(B, H, T, D1, q1)
    dk1 = buffers.bthd(B, H, T, D1, k1)
    dq2 = buffers.bthd(B, H, T, D2, q2) if has_rec and not tied else buffers.scratch(q1)
    dk2 = buffers.bthd(B, H, T, D2, k2) if has_rec else buffers.scratch(q1)
    brow = buffers.empty((B, H, T), device=q1.device, dtype=torch.float32) if from_k \
        else buffers.scratch(q1, torch.float32)
    dv, dbias, dsc = outs
    launching.launch("dkdv", T, B * H,
            (*ins, dk1, dk2, dv, dbias, brow, buffers.scratch(q1, torch.float32),
             buffers.scratch(q1, torch.float32), buffers.scratch(q1, torch.float32), *strides),
            dict(meta, ROW_ATOMIC=False, TIED=False))
    # tied: dq -> DQ1 and dk -> DQ2, reading dkdv's dk1, dk2 (read-only here, scratch after)
    dq_out = (dq1, buffers.bthd(B, H, T, D1, k1)) if tied else (dq1, dq2)
    launching.launch("dq", T, B * H,
            (q1, k1, q2, k2, v, brow if from_k else bias_c, sc1, sc2, do, lse, delta, *dq_out,
             dk1, dk2, dsc, *strides),
            dict(meta, TIED=tied, HAS_BIAS=1 if from_k else meta["HAS_BIAS"]))
    if tied:
        return dq_out[0], dq_out[1], buffers.absent(q1), buffers.absent(q1), dv
    if not has_rec:
        return dq1, dk1, buffers.absent(q1), buffers.absent(q1), dv
    return dq1, dk1, dq2, dk2, dv


# ----------------------------------------------------------------------------------------
# the operators: one forward op, one backward op, one autograd registration
# ----------------------------------------------------------------------------------------
# On a GPU both are torch.library.triton_op: in eager mode the body runs as plain Python
# (launching the autotuned kernels directly); under torch.compile AOTAutograd decomposes the
# op into its wrap_triton kernel calls, so inductor sees the kernels themselves: it launches
# them from its generated code, fuses the gate arithmetic around them and can capture them in
# CUDA graphs.  Under TRITON_INTERPRET=1 the kernels are interpreter functions that cannot be
# traced, so the SAME bodies are registered with torch.library.custom_op instead (opaque to
# the compiler; the fake implementation is the same body, whose launches are skipped on fake
# tensors: see launching.launch).  Either way there is one op, one autograd formula, one launcher.
def _register(name: str, fn):
    if K.INTERPRET:
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op
    return torch.library.triton_op(name, fn, mutates_args=())


def _ra_fwd(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
            bias: Optional[Tensor], sc1: Optional[Tensor], sc2: Optional[Tensor], band: int,
            tied: bool, tbias: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    return ra_forward(q1, k1, q2, k2, v, bias, sc1, sc2, band, tied, tbias)


def _ra_bwd(do: Tensor, q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor],
            v: Tensor, bias: Optional[Tensor], sc1: Optional[Tensor], sc2: Optional[Tensor],
            o: Tensor, lse: Tensor, band: int, tied: bool, tbias: Optional[Tensor]
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return ra_backward(do, q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, band, tied, tbias=tbias)


ra_fwd_op = _register("rabench::ra_fwd", _ra_fwd)
ra_bwd_op = _register("rabench::ra_bwd", _ra_bwd)


def _setup_context(ctx, inputs, output):
    q1, k1, q2, k2, v, bias, sc1, sc2, band, tied, tbias = inputs
    o, lse = output
    ctx.band = band
    ctx.tied = tied
    ctx.has_scale = sc1 is not None
    # lse is an internal statistic nobody differentiates: leave its gradient None instead of
    # a materialised zero tensor (one less allocation and fill per backward)
    ctx.set_materialize_grads(False)
    ctx.has_rec = q2 is not None
    ctx.has_bias = bias is not None
    ctx.save_for_backward(q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, tbias)


def _backward_through(bwd):
    """The autograd formula, with the backward launcher it calls: the op (compiled code) or the
    plain function (eager: see _EagerRA)."""
    def backward(ctx, do, dlse):
        # dlse is never used by callers (lse is an internal statistic); ra_attention returns o
        # only. Every gradient comes back whole from the kernels (scales' chain rule, tied q/k
        # sums), so under torch.compile nothing is left to assemble but the qkv concatenation
        # sdpa has too.
        q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, tbias = ctx.saved_tensors
        if do is None:  # o did not reach the loss
            return (None,) * 11
        dq1, dk1, dq2, dk2, dv, dbias, dscale = bwd(do, q1, k1, q2, k2, v, bias, sc1, sc2,
                                                    o, lse, ctx.band, ctx.tied, tbias=tbias)
        dsc1 = dscale[:, 0] if ctx.has_scale else None
        dsc2 = dscale[:, 1] if (ctx.has_scale and sc2 is not None) else None
        return (dq1, dk1, dq2 if ctx.has_rec else None, dk2 if ctx.has_rec else None, dv,
                dbias if ctx.has_bias else None, dsc1, dsc2, None, None, None)
    return backward


ra_fwd_op.register_autograd(_backward_through(ra_bwd_op), setup_context=_setup_context)


class _EagerRA(torch.autograd.Function):
    """The ops' forward, autograd formula and launchers, called without torch.library's
    dispatch: in eager mode that dispatch (the op's schema checks, its aliasing check, the
    dynamo-disabled wrapper of a triton_op) cost more host time than the launches themselves.
    torch.compile traces the ops instead (ra_attention picks). The forward takes ctx itself
    (the older form): with a separate setup_context, Function.apply binds every call's
    arguments to the forward's inspect.signature first, tens of microseconds a call."""

    @staticmethod
    def forward(ctx, q1, k1, q2, k2, v, bias, sc1, sc2, band, tied, tbias):
        inputs = (q1, k1, q2, k2, v, bias, sc1, sc2, band, tied, tbias)
        output = ra_forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    backward = staticmethod(_backward_through(ra_backward))


# ----------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------
def ra_attention(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
                 bias: Optional[Tensor], band: Optional[int] = None,
                 scale1: Optional[Tensor] = None, scale2: Optional[Tensor] = None,
                 tied: bool = False, tile_bias: Optional[Tensor] = None) -> Tensor:
    """Causal attention with two bilinear scores and a column bias:

        L_ij = s1_h q1_i.k1_j + [band is None or i-j < band] * s2_h q2_i.k2_j + bias_j
               (+ R_hij)                                                                 (j <= i)
        O_i  = sum_j softmax_j(L_i.) v_j

    tied=True is canonical RA's form, q2 = k1 and k2 = q1 (pass q2 = k2 = None): the second
    score is s2_h k1_i.q1_j, and the backward returns q1's and k1's whole gradients straight
    from the kernels (each tensor plays two parts; the dq kernel adds the two).

    q1, k1: (B, H, T, D1); q2, k2: (B, H, T, D2) or both None; v: (B, H, T, Dv);
    bias: (B, H, T), or a per-head vector u of shape (H, D1) meaning bias_j = k1_j . u (computed
    in the kernels from the key tiles: canonical RA's discoverability), or None; cast to
    float32.  scale1, scale2: per-head scales s1, s2 of shape (H,) (cast to float32,
    differentiable), applied inside the kernel; None means 1 (scale2 is required with scale1
    when q2 is given).  tile_bias: R (H, T, T) in any float dtype, one matrix per head added to
    every batch element's logits in float32 (entries above the diagonal unused), not
    differentiated (ra-amortized's cached pattern), or None.  Inputs may be strided views with
    a unit last stride (no copies are made).  Returns (B, H, T, Dv) in v.dtype.
    """
    if (q2 is None) != (k2 is None):
        raise RabenchError("ra_attention: pass both q2 and k2, or neither")
    if tied and q2 is not None:
        raise RabenchError("ra_attention: tied=True uses q2 = k1 and k2 = q1; pass q2 = k2 = None")
    for name, t in (("q1", q1), ("k1", k1), ("q2", q2), ("k2", k2), ("v", v)):
        if t is not None and t.dim() != 4:
            raise RabenchError(f"ra_attention: {name} must be (B, H, T, D), got {tuple(t.shape)}")
    check_device(q1)
    B, H, T, D1 = q1.shape
    if k1.shape != q1.shape:
        raise RabenchError(f"ra_attention: k1 {tuple(k1.shape)} != q1 {tuple(q1.shape)}")
    if v.shape[:3] != q1.shape[:3]:
        raise RabenchError(f"ra_attention: v {tuple(v.shape)} does not match q1 {tuple(q1.shape)}")
    if q2 is not None:
        if q2.shape != k2.shape or q2.shape[:3] != q1.shape[:3]:
            raise RabenchError(f"ra_attention: q2 {tuple(q2.shape)} / k2 {tuple(k2.shape)} "
                               f"must both be (B, H, T, D2) with q1's B, H, T")
    tensors = [t for t in (q1, k1, q2, k2, v) if t is not None]
    if len({t.dtype for t in tensors}) != 1:
        raise RabenchError("ra_attention: q1, k1, q2, k2, v must share one dtype")
    if q1.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise RabenchError(f"ra_attention: dtype {q1.dtype} not supported (bf16, fp16, fp32)")
    if len({t.device for t in tensors}) != 1 or (bias is not None and bias.device != q1.device):
        raise RabenchError("ra_attention: all tensors must be on one device")
    for name, d in (("D1", D1), ("Dv", v.shape[-1]), ("D2", q2.shape[-1] if q2 is not None else 16)):
        if not 1 <= d <= 256:
            raise RabenchError(f"ra_attention: head dim {name}={d} outside 1..256")
    if bias is not None:
        if tuple(bias.shape) not in ((B, H, T), (H, D1)):
            raise RabenchError(f"ra_attention: bias must be (B, H, T)={(B, H, T)} or (H, D1)={(H, D1)}, "
                               f"got {tuple(bias.shape)}")
        bias = bias.float()  # differentiable cast; the kernel adds a float32 bias
    if band is not None:
        band = int(band)
        if band < 1:
            raise RabenchError(f"ra_attention: band must be >= 1 (or None), got {band}")
    if scale2 is not None and scale1 is None:
        raise RabenchError("ra_attention: scale2 needs scale1 (pass ones for an unscaled q1)")
    has_rec = q2 is not None or tied
    if scale1 is not None and has_rec and scale2 is None:
        raise RabenchError("ra_attention: with scale1 and a reciprocal term, pass scale2 too")
    for name, sc in (("scale1", scale1), ("scale2", scale2)):
        if sc is not None:
            if tuple(sc.shape) != (H,) or sc.device != q1.device:
                raise RabenchError(f"ra_attention: {name} must be (H,)=({H},) on {q1.device}, "
                                   f"got {tuple(sc.shape)} on {sc.device}")
    if tile_bias is not None:
        if tuple(tile_bias.shape) != (H, T, T) or tile_bias.device != q1.device:
            raise RabenchError(f"ra_attention: tile_bias must be (H, T, T)={(H, T, T)} on "
                               f"{q1.device}, got {tuple(tile_bias.shape)} on {tile_bias.device}")
        if tile_bias.requires_grad:
            raise RabenchError("ra_attention: tile_bias gets no gradient; pass it detached")
    scale1 = scale1.float() if scale1 is not None else None
    scale2 = scale2.float() if (scale2 is not None and has_rec) else None
    band_i = band_arg(band, T, has_rec)
    # eager calls skip the op's dispatch (same launchers and formula); compiled code sees the op
    attend = ra_fwd_op if torch.compiler.is_compiling() else _EagerRA.apply
    o, _ = attend(q1, k1, q2, k2, v, bias, scale1, scale2, band_i, bool(tied), tile_bias)
    return o


def band_arg(band: Optional[int], T: int, has_rec: bool) -> int:
    """The ops' band: 0 for none.  i - j <= T - 1 for every pair, so a band >= T masks nothing,
    and without a reciprocal term there is nothing to mask."""
    return 0 if (band is None or band >= T or not has_rec) else band


