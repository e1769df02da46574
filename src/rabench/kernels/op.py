"""torch.library custom ops around the Triton RA kernels, their autograd, and config choice.

Ops (both opaque to torch.compile, with fake implementations so that it traces through):
    rabench::ra_fwd(q1, k1, q2?, k2?, v, bias?, band) -> (o, lse)
    rabench::ra_bwd(do, q1, k1, q2?, k2?, v, bias?, o, lse, band)
        -> (dq1, dk1, dq2, dk2, dv, dbias)     (empty tensors for absent inputs)
`band` is an int; 0 means "no band" (the public wrapper maps None and band >= T to 0).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton

from rabench.errors import RabenchError

from . import ra_flash as K

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


def _check_device(t: Tensor) -> None:
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
# configs
# ----------------------------------------------------------------------------------------
# Under the interpreter one small fixed config (BLOCK_M != BLOCK_N, so the multi-block
# diagonal logic is exercised by the CPU tests exactly as on the GPU).
_INTERP_FWD = dict(BLOCK_M=32, BLOCK_N=16)
_INTERP_DKDV = dict(BLOCK_M=16, BLOCK_N=32)
_INTERP_DQ = dict(BLOCK_M=32, BLOCK_N=16)


def _cfgs(items):
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=s)
            for (m, n, w, s) in items]


# (BLOCK_M, BLOCK_N, num_warps, num_stages); forward / dq: BLOCK_M % BLOCK_N == 0;
# dkdv: BLOCK_N % BLOCK_M == 0.  Two classes by the largest head dim: the kernels keep the
# loop-invariant operands and up to three fp32 accumulators in registers, so wide heads need
# smaller tiles.  Candidates picked from ptxas resource reports (no or little spilling on
# sm_90) and H100 timings: notes/kernel-versions.md.
CONFIGS = {
    "small": {  # max head dim <= 64
        "fwd": [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 8, 3), (128, 32, 4, 3)],
        "dkdv": [(32, 64, 4, 3), (16, 64, 4, 3), (64, 128, 8, 2), (16, 128, 8, 3)],
        "dq": [(64, 32, 4, 3), (128, 32, 8, 4), (64, 16, 4, 3), (128, 16, 8, 3)],
    },
    "large": {  # up to 128 (and beyond, slowly)
        "fwd": [(64, 32, 8, 3), (64, 32, 4, 3), (128, 32, 16, 3), (128, 64, 8, 3)],
        "dkdv": [(16, 32, 8, 3), (16, 64, 8, 3), (32, 64, 8, 3), (16, 32, 4, 3)],
        "dq": [(32, 16, 4, 3), (64, 16, 8, 3), (128, 32, 8, 3), (64, 32, 8, 3)],
    },
}
_KEY = ["T", "D1", "D2", "DV", "HAS_REC", "HAS_BAND", "HAS_BIAS"]

_tuned: dict[tuple[str, str], object] = {}


def _kernel(name: str, size: str):
    """The autotuned kernel (GPU) for one head-dim class, built on first use."""
    if (name, size) not in _tuned:
        raw = {"fwd": K._ra_fwd_kernel, "dkdv": K._ra_dkdv_kernel, "dq": K._ra_dq_kernel}[name]
        _tuned[name, size] = triton.autotune(configs=_cfgs(CONFIGS[size][name]), key=_KEY)(raw)
    return _tuned[name, size]


# Explicit configs for tuning sweeps: {"fwd": (BM, BN, warps, stages), ...}; None = autotune.
_FORCED: dict[str, tuple] = {}


def force_config(name: str, cfg: Optional[tuple]) -> None:
    """Pin one kernel ("fwd", "dkdv", "dq") to (BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    if cfg is None:
        _FORCED.pop(name, None)
    else:
        _FORCED[name] = tuple(cfg)


def _launch(name: str, grid_rows: int, bh: int, args: tuple, meta: dict) -> None:
    if K.INTERPRET:
        fixed = {"fwd": _INTERP_FWD, "dkdv": _INTERP_DKDV, "dq": _INTERP_DQ}[name]
        raw = {"fwd": K._ra_fwd_kernel, "dkdv": K._ra_dkdv_kernel, "dq": K._ra_dq_kernel}[name]
        blk = fixed["BLOCK_N"] if name == "dkdv" else fixed["BLOCK_M"]
        raw[(bh, triton.cdiv(grid_rows, blk))](*args, **meta, **fixed, INTERP=True)
        return
    if name in _FORCED:
        m, n, w, s = _FORCED[name]
        raw = {"fwd": K._ra_fwd_kernel, "dkdv": K._ra_dkdv_kernel, "dq": K._ra_dq_kernel}[name]
        blk = n if name == "dkdv" else m
        raw[(bh, triton.cdiv(grid_rows, blk))](*args, **meta, BLOCK_M=m, BLOCK_N=n,
                                               num_warps=w, num_stages=s)
        return
    size = "small" if max(meta["BD1"], meta["BD2"], meta["BDV"]) <= 64 else "large"
    kern = _kernel(name, size)
    if name == "dkdv":
        grid = lambda META: (bh, triton.cdiv(grid_rows, META["BLOCK_N"]))  # noqa: E731
    else:
        grid = lambda META: (bh, triton.cdiv(grid_rows, META["BLOCK_M"]))  # noqa: E731
    kern[grid](*args, **meta)


def _empty(*args, **kwargs) -> Tensor:
    """Allocator for kernel outputs; tests swap it for a NaN-filling one (poisoned outputs)."""
    return torch.empty(*args, **kwargs)


def _pow2(d: int) -> int:
    # plain Python: triton.next_power_of_2 is a jit-callable and costs ~10 us a call
    return max(16, 1 << (d - 1).bit_length())


def _st(x: Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _unit_last(x: Optional[Tensor]) -> Optional[Tensor]:
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()


def _meta(q1, q2, v, bias, band) -> dict:
    D1 = q1.shape[-1]
    D2 = q2.shape[-1] if q2 is not None else 16
    DV = v.shape[-1]
    return dict(D1=D1, BD1=_pow2(D1), D2=D2, BD2=_pow2(D2), DV=DV, BDV=_pow2(DV),
                HAS_REC=q2 is not None, HAS_BAND=band > 0, HAS_BIAS=bias is not None)


# ----------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------
def ra_forward(q1, k1, q2, k2, v, bias, band: int):
    """Returns (o, lse2): o (B, H, T, Dv) in v.dtype; lse2 (B, H, T) float32 in log2 units."""
    q1, k1, q2, k2, v = (_unit_last(x) for x in (q1, k1, q2, k2, v))
    B, H, T, _ = q1.shape
    o = _empty((B, H, T, v.shape[-1]), device=v.device, dtype=v.dtype)
    lse = _empty((B, H, T), device=v.device, dtype=torch.float32)
    if T == 0 or B * H == 0:
        return o, lse
    bias_c = bias.contiguous() if bias is not None else lse
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    args = (q1, k1, q2_, k2_, v, bias_c, o, lse,
            *_st(q1), *_st(k1), *_st(q2_), *_st(k2_), *_st(v), *_st(o),
            H, T, band)
    _launch("fwd", T, B * H, args, _meta(q1, q2, v, bias, band))
    return o, lse


def ra_backward(do, q1, k1, q2, k2, v, bias, o, lse, band: int):
    q1, k1, q2, k2, v, o, do = (_unit_last(x) for x in (q1, k1, q2, k2, v, o, do))
    B, H, T, D1 = q1.shape
    dq1 = _empty((B, H, T, D1), device=q1.device, dtype=q1.dtype)
    dk1 = _empty((B, H, T, D1), device=q1.device, dtype=k1.dtype)
    dv = _empty((B, H, T, v.shape[-1]), device=q1.device, dtype=v.dtype)
    if q2 is not None:
        D2 = q2.shape[-1]
        dq2 = _empty((B, H, T, D2), device=q1.device, dtype=q2.dtype)
        dk2 = _empty((B, H, T, D2), device=q1.device, dtype=k2.dtype)
    else:
        dq2 = q1.new_empty(0)
        dk2 = q1.new_empty(0)
    dbias = (_empty((B, H, T), device=q1.device, dtype=torch.float32)
             if bias is not None else q1.new_empty(0, dtype=torch.float32))
    if T == 0 or B * H == 0:
        return dq1, dk1, dq2, dk2, dv, dbias
    meta = _meta(q1, q2, v, bias, band)

    delta = _empty((B, H, T), device=q1.device, dtype=torch.float32)
    dblk = 16 if K.INTERPRET else 128
    K._ra_delta_kernel[(B * H, triton.cdiv(T, dblk))](
        o, do, delta, *_st(o), *_st(do), H, T, DV=meta["DV"], BDV=meta["BDV"],
        BLOCK_M=dblk)

    bias_c = bias.contiguous() if bias is not None else lse
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    dq2_ = dq2 if q2 is not None else dq1
    dk2_ = dk2 if q2 is not None else dk1
    dbias_ = dbias if bias is not None else lse
    strides = (*_st(q1), *_st(k1), *_st(q2_), *_st(k2_), *_st(v), *_st(do), H, T, band)
    _launch("dkdv", T, B * H,
            (q1, k1, q2_, k2_, v, bias_c, do, lse, delta, dk1, dk2_, dv, dbias_, *strides),
            meta)
    _launch("dq", T, B * H,
            (q1, k1, q2_, k2_, v, bias_c, do, lse, delta, dq1, dq2_, *strides), meta)
    return dq1, dk1, dq2, dk2, dv, dbias


# ----------------------------------------------------------------------------------------
# custom ops
# ----------------------------------------------------------------------------------------
@torch.library.custom_op("rabench::ra_fwd", mutates_args=())
def ra_fwd_op(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
              bias: Optional[Tensor], band: int) -> tuple[Tensor, Tensor]:
    return ra_forward(q1, k1, q2, k2, v, bias, band)


@ra_fwd_op.register_fake
def _(q1, k1, q2, k2, v, bias, band):
    B, H, T, _ = q1.shape
    return (v.new_empty((B, H, T, v.shape[-1])),
            q1.new_empty((B, H, T), dtype=torch.float32))


@torch.library.custom_op("rabench::ra_bwd", mutates_args=())
def ra_bwd_op(do: Tensor, q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor],
              v: Tensor, bias: Optional[Tensor], o: Tensor, lse: Tensor, band: int
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return ra_backward(do, q1, k1, q2, k2, v, bias, o, lse, band)


@ra_bwd_op.register_fake
def _(do, q1, k1, q2, k2, v, bias, o, lse, band):
    empty0 = q1.new_empty(0)
    return (torch.empty_like(q1, memory_format=torch.contiguous_format),
            torch.empty_like(k1, memory_format=torch.contiguous_format),
            torch.empty_like(q2, memory_format=torch.contiguous_format)
            if q2 is not None else empty0,
            torch.empty_like(k2, memory_format=torch.contiguous_format)
            if k2 is not None else q1.new_empty(0),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            lse.new_empty(lse.shape) if bias is not None else q1.new_empty(0, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    q1, k1, q2, k2, v, bias, band = inputs
    o, lse = output
    ctx.band = band
    # lse is an internal statistic nobody differentiates: leave its gradient None instead of
    # a materialised zero tensor (one less allocation and fill per backward)
    ctx.set_materialize_grads(False)
    ctx.has_rec = q2 is not None
    ctx.has_bias = bias is not None
    ctx.save_for_backward(q1, k1, q2, k2, v, bias, o, lse)


def _backward(ctx, do, dlse):
    # dlse is never used by callers (lse is an internal statistic); ra_attention returns o only.
    q1, k1, q2, k2, v, bias, o, lse = ctx.saved_tensors
    if do is None:  # o did not reach the loss
        return None, None, None, None, None, None, None
    dq1, dk1, dq2, dk2, dv, dbias = ra_bwd_op(do, q1, k1, q2, k2, v, bias, o, lse, ctx.band)
    return (dq1, dk1, dq2 if ctx.has_rec else None, dk2 if ctx.has_rec else None, dv,
            dbias if ctx.has_bias else None, None)


ra_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _RAFunction(torch.autograd.Function):
    """Eager-mode path: the same launchers without the custom-op dispatch layers, whose Python
    overhead per call is several times that of the launches themselves on a slow host CPU.
    torch.compile traces the custom op instead (ra_attention picks)."""

    @staticmethod
    def forward(ctx, q1, k1, q2, k2, v, bias, band):
        o, lse = ra_forward(q1, k1, q2, k2, v, bias, band)
        ctx.band = band
        ctx.has_rec = q2 is not None
        ctx.has_bias = bias is not None
        ctx.save_for_backward(q1, k1, q2, k2, v, bias, o, lse)
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q1, k1, q2, k2, v, bias, o, lse = ctx.saved_tensors
        dq1, dk1, dq2, dk2, dv, dbias = ra_backward(do, q1, k1, q2, k2, v, bias, o, lse,
                                                    ctx.band)
        return (dq1, dk1, dq2 if ctx.has_rec else None, dk2 if ctx.has_rec else None, dv,
                dbias if ctx.has_bias else None, None)


# ----------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------
def ra_attention(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
                 bias: Optional[Tensor], band: Optional[int] = None) -> Tensor:
    """Causal attention with two bilinear scores and a column bias (no scaling applied):

        L_ij = q1_i.k1_j + [band is None or i-j < band] * q2_i.k2_j + bias_j   (j <= i)
        O_i  = sum_j softmax_j(L_i.) v_j

    q1, k1: (B, H, T, D1); q2, k2: (B, H, T, D2) or both None; v: (B, H, T, Dv);
    bias: (B, H, T) or None (cast to float32).  Returns (B, H, T, Dv) in v.dtype.
    """
    if (q2 is None) != (k2 is None):
        raise RabenchError("ra_attention: pass both q2 and k2, or neither")
    for name, t in (("q1", q1), ("k1", k1), ("q2", q2), ("k2", k2), ("v", v)):
        if t is not None and t.dim() != 4:
            raise RabenchError(f"ra_attention: {name} must be (B, H, T, D), got {tuple(t.shape)}")
    _check_device(q1)
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
        if tuple(bias.shape) != (B, H, T):
            raise RabenchError(f"ra_attention: bias must be (B, H, T)={(B, H, T)}, "
                               f"got {tuple(bias.shape)}")
        bias = bias.float()  # differentiable cast; the kernel adds a float32 bias
    if band is not None:
        band = int(band)
        if band < 1:
            raise RabenchError(f"ra_attention: band must be >= 1 (or None), got {band}")
    # i - j <= T - 1 for every pair, so a band >= T masks nothing: same as no band
    band_i = 0 if (band is None or band >= T or q2 is None) else band
    if torch.compiler.is_compiling():
        o, _ = ra_fwd_op(q1, k1, q2, k2, v, bias, band_i)  # opaque custom op in the graph
        return o
    return _RAFunction.apply(q1, k1, q2, k2, v, bias, band_i)
