"""torch.library ops around the Triton RA kernels, their autograd, and config choice.

Ops (torch.library.triton_op on a GPU: torch.compile sees the Triton kernels inside them):
    rabench::ra_fwd(q1, k1, q2?, k2?, v, bias?, sc1?, sc2?, band, tied) -> (o, lse)
    rabench::ra_bwd(do, q1, k1, q2?, k2?, v, bias?, sc1?, sc2?, o, lse, band, tied)
        -> (dq1, dk1, dq2, dk2, dv, dbias, dscale)     (empty tensors for absent inputs)
`band` is an int; 0 means "no band" (the public wrapper maps None and band >= T to 0).
`tied` is canonical RA's reciprocal term on the first pair itself (q2 = k1, k2 = q1; q2, k2
passed as None): the backward then returns the whole gradients of q1 and k1 in dq1, dk1.
The gradients are the true ones (the scales' chain rule runs in the kernels; dscale is (H, 2)).
ra_fwd carries the autograd formula (register_autograd), used alike in eager and compiled code.

Two backwards, one answer (backward_mode(), force_backward()):
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
backward (benchmarks time the two in one process).  The mode is read when the backward runs, or
when torch.compile traces it (the compiled graph keeps the mode it was traced with).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import wrap_triton

from rabench.errors import RabenchError

from . import gates as KG
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
_INTERP = {"fwd": _INTERP_FWD, "dkdv": _INTERP_DKDV, "onepass": _INTERP_DKDV, "dq": _INTERP_DQ}


def _cfgs(items):
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=s)
            for (m, n, w, s) in items]


# (BLOCK_M, BLOCK_N, num_warps, num_stages); forward / dq: BLOCK_M % BLOCK_N == 0;
# dkdv and onepass (the dkdv kernel with the row-side atomics): BLOCK_N % BLOCK_M == 0.  Two
# classes by the largest head dim: the kernels keep the loop-invariant operands and up to three
# fp32 accumulators in registers, so wide heads need smaller tiles.  Candidates picked from
# ptxas resource reports (no or little spilling on sm_90) and H100 timings:
# notes/kernel-versions.md.
CONFIGS = {
    "small": {  # max head dim <= 64
        "fwd": [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 8, 3), (128, 32, 4, 3),
                (128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 4)],  # last three: v7, Hopper
        "dkdv": [(32, 64, 4, 3), (16, 64, 4, 3), (64, 128, 8, 2), (16, 128, 8, 3)],
        "dq": [(64, 32, 4, 3), (128, 32, 8, 4), (64, 16, 4, 3), (128, 16, 8, 3)],
        # timed once on an H100 (kernel-versions v9: slower than two-pass); picked by offline
        # sm_90 compiles (stack bytes of canonical RA tied / no reciprocal term: 272/56,
        # 192/40, 104/0, 96/0, 16/0, 0/0); 4-warp and BLOCK_N = 128 tiles spill 300-1100 B
        # there (the row side's two fp32 tiles on top of dkdv's three)
        "onepass": [(64, 64, 8, 3), (64, 64, 8, 2), (32, 64, 8, 3), (32, 64, 8, 2),
                    (16, 64, 8, 3), (32, 32, 8, 3)],
    },
    "large": {  # up to 128 (and beyond, slowly)
        "fwd": [(64, 32, 8, 3), (64, 32, 4, 3), (128, 32, 16, 3), (128, 64, 8, 3)],
        "dkdv": [(16, 32, 8, 3), (16, 64, 8, 3), (32, 64, 8, 3), (16, 32, 4, 3)],
        "dq": [(32, 16, 4, 3), (64, 16, 8, 3), (128, 32, 8, 3), (64, 32, 8, 3)],
        # not yet timed; offline sm_90 stack bytes at D = 128, tied / no reciprocal term: 72/0,
        # 80, 0, 336/32 ((16, 64, 8, 3) and (32, 64, 8, 3): 900-1200 B tied)
        "onepass": [(16, 32, 8, 3), (16, 32, 8, 2), (16, 16, 8, 3), (32, 32, 8, 3)],
    },
}
_KEY = ["T", "D1", "D2", "DV", "HAS_REC", "HAS_BAND", "HAS_BIAS"]  # HAS_BIAS: 0, 1 or 2

_tuned: dict[tuple[str, str], object] = {}


def _kernel(name: str, size: str):
    """The autotuned kernel (GPU) for one head-dim class, built on first use.  The one-pass
    kernel adds into its accumulators, so the autotuner zeroes them before every trial (and
    once more before the real launch) instead of letting the trials' sums pile up.

    Winners are kept in Triton's disk cache (`cache_results`, keyed by Triton, the card's
    architecture, the kernel's source, the tuning key and the candidates), so each new process
    of a suite skips the timing trials.  A disk hit runs no trials, so the one-pass
    accumulators (allocated as zeros) hold no trial sums and it can be cached as well."""
    if (name, size) not in _tuned:
        if name == "onepass":
            tune = triton.autotune(configs=_cfgs(CONFIGS[size][name]), key=_KEY + ["TIED"],
                                   reset_to_zero=["DQ1A", "DQ2A"], cache_results=True)
        else:
            tune = triton.autotune(configs=_cfgs(CONFIGS[size][name]), key=_KEY, cache_results=True)
        _tuned[name, size] = tune(_RAW[name])
    return _tuned[name, size]


# Explicit configs for tuning sweeps: {"fwd": (BM, BN, warps, stages), ...}; None = autotune.
_FORCED: dict[str, tuple] = {}


def force_config(name: str, cfg: Optional[tuple]) -> None:
    """Pin one kernel ("fwd", "dkdv", "dq", "onepass") to (BLOCK_M, BLOCK_N, num_warps,
    num_stages).  A tile pair the kernel cannot step is refused: it would not fail, it would
    return wrong sums (the diagonal stage walks the smaller block inside the larger one)."""
    if name not in _TUNED_KERNELS:
        raise RabenchError(f"force_config: kernel must be one of {', '.join(_TUNED_KERNELS)}, "
                           f"got {name!r}")
    if cfg is None:
        _FORCED.pop(name, None)
        return
    cfg = tuple(cfg)
    if len(cfg) != 4 or not _tiles_fit(name, cfg[0], cfg[1]):
        raise RabenchError(f"force_config: {name} needs (BLOCK_M, BLOCK_N, num_warps, num_stages) "
                           f"with {_tile_rule(name)}, got {cfg}")
    _FORCED[name] = cfg


_TUNED_KERNELS = ("fwd", "dkdv", "dq", "onepass")


def _tile_rule(name: str) -> str:
    """_tiles_fit's rule in words, for the error message."""
    return "BLOCK_N % BLOCK_M == 0" if _grid_block(name) == "BLOCK_N" else "BLOCK_M % BLOCK_N == 0"


def _tiles_fit(name: str, block_m: int, block_n: int) -> bool:
    """Whether the kernel's causal schedule can step these tiles (see CONFIGS): the block the
    grid counts (_grid_block) is a multiple of the other."""
    grid, other = (block_n, block_m) if _grid_block(name) == "BLOCK_N" else (block_m, block_n)
    return grid % other == 0


BACKWARD_MODES = ("one-pass", "two-pass")
_FORCED_BACKWARD: Optional[str] = None


def force_backward(mode: Optional[str]) -> None:
    """Pin the backward to "one-pass" or "two-pass" (so a benchmark can time both in one
    process); None restores the default (backward_mode)."""
    global _FORCED_BACKWARD
    if mode is not None and mode not in BACKWARD_MODES:
        raise RabenchError(f"force_backward: mode must be one of {', '.join(BACKWARD_MODES)} "
                           f"or None, got {mode!r}")
    _FORCED_BACKWARD = mode


def backward_mode() -> str:
    """The backward the next call runs: the forced one, else two-pass (faster on an H100 and
    bitwise repeatable: module docstring)."""
    return _FORCED_BACKWARD or "two-pass"


# kernel name -> Triton function; "onepass" is the dkdv kernel launched with ROW_ATOMIC
_RAW = {"fwd": K._ra_fwd_kernel, "dkdv": K._ra_dkdv_kernel, "onepass": K._ra_dkdv_kernel,
        "dq": K._ra_dq_kernel, "delta": K._ra_delta_kernel}
_KEY_BLOCKS = ("dkdv", "onepass")  # one program per key block: the grid counts BLOCK_N


def _grid_block(name: str) -> str:
    """The block size a kernel's grid counts: BLOCK_N for the key-block kernels, else BLOCK_M."""
    return "BLOCK_N" if name in _KEY_BLOCKS else "BLOCK_M"


def _is_fake(args: tuple) -> bool:
    return any(isinstance(a, FakeTensor) for a in args)


def _launch(name: str, grid_rows: int, bh: int, args: tuple, meta: dict) -> None:
    """Launch one kernel over (batch*heads, row blocks).  On a GPU under torch.compile the
    launch goes through torch.library.wrap_triton (a traced kernel call, visible to inductor);
    eager launches call the kernel itself (_launch_eager, _traceable)."""
    if K.INTERPRET:
        if _is_fake(args):  # the custom_op's fake implementation: shapes only, no launch
            return
        fixed = _INTERP[name]
        grid = (bh, triton.cdiv(grid_rows, fixed[_grid_block(name)]))
        _RAW[name][grid](*args, **meta, **fixed, INTERP=True)
        return
    if name in _FORCED:
        m, n, w, s = _FORCED[name]
        blk = {"BLOCK_M": m, "BLOCK_N": n}[_grid_block(name)]
        _traceable(_RAW[name], args)[(bh, triton.cdiv(grid_rows, blk))](
            *args, **meta, BLOCK_M=m, BLOCK_N=n, INTERP=False, num_warps=w, num_stages=s)
        return
    size = "small" if max(meta["BD1"], meta["BD2"], meta["BDV"]) <= 64 else "large"
    if _is_eager(args):
        _launch_eager(name, size, grid_rows, bh, args, meta)
        return
    wrap_triton(_kernel(name, size))[_grid(name, grid_rows, bh)](*args, **meta, INTERP=False)


def _is_eager(args: tuple) -> bool:
    """True for a launch on real tensors outside torch.compile's tracing (whose fake and
    functional tensors are Tensor subclasses): the only launches the eager fast path serves."""
    return type(args[0]) is torch.Tensor and not torch.compiler.is_compiling()


# Eager launches skip Triton's per-call dispatch.  JITFunction.run binds every argument to the
# kernel's signature, specializes each one and hashes them to find the compiled binary: about
# 70 us of host time a launch on an H100 machine, four launches a layer
# (benchmarks/host_overhead_profile.py); the autotuner's run adds its own dicts on top.  So an
# eager launch keys the call itself by what decides the binary (_specialization) and keeps,
# per key, the autotuner's winner (_EAGER_CFG: the key's first launch autotunes) and then the
# binary Triton returns (_EAGER_BIN: its second launch goes through Triton's dispatch); from the
# third launch on it calls the binary, CompiledKernel[grid], Triton's own launcher, with every
# argument in the kernel's order, as JITFunction.run does.
_EAGER_CFG: dict[tuple, triton.Config] = {}
_EAGER_BIN: dict[tuple, tuple] = {}  # key -> (binary, constexprs in the kernel's order, grid block)


def _specialization(args: tuple) -> tuple:
    """What Triton specializes a compiled kernel on, per positional argument: a tensor's dtype
    and 16-byte alignment; an int's value (Triton looks only at whether it is 1, divisible by
    16, and fits 32 bits, which the value decides); a float's type only (always fp32)."""
    return tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor)
                 else (float if type(a) is float else a) for a in args)


def _launch_eager(name: str, size: str, grid_rows: int, bh: int, args: tuple, meta: dict) -> None:
    """An eager launch of one of the tuned kernels over (bh, row blocks): see _EAGER_BIN."""
    key = (name, *meta.values(), *_specialization(args))
    if _call_kept(key, bh, grid_rows, args):
        return
    cfg = _EAGER_CFG.get(key)
    if cfg is None:
        kern = _kernel(name, size)
        kern[_grid(name, grid_rows, bh)](*args, **meta, INTERP=False)
        _EAGER_CFG[key] = kern.best_config
        return
    blk = cfg.kwargs[_grid_block(name)]
    _launch_and_keep(key, _RAW[name], (bh, triton.cdiv(grid_rows, blk)), args,
                     {**meta, **cfg.kwargs, "INTERP": False}, blk,
                     num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _call_kept(key: tuple, bh: int, grid_rows: int, args: tuple) -> bool:
    """Launch the binary kept under `key` over (bh, row blocks), if there is one."""
    hit = _EAGER_BIN.get(key)
    if hit is None:
        return False
    binary, constexprs, blk = hit
    # three grid dims: CompiledKernel's launcher reads grid[2] (JITFunction.run pads it, this
    # does not)
    binary[(bh, triton.cdiv(grid_rows, blk), 1)](*args, *constexprs)
    return True


def _launch_fixed(key: tuple, kernel, bh: int, grid_rows: int, blk: int, args: tuple,
                  constexprs: dict) -> None:
    """An eager launch of a kernel with one fixed config (no autotuning) over (bh, row blocks of
    blk): the binary kept under `key`, else Triton's dispatch, keeping the binary."""
    if not _call_kept(key, bh, grid_rows, args):
        _launch_and_keep(key, kernel, (bh, triton.cdiv(grid_rows, blk)), args, constexprs, blk)


def _launch_and_keep(key: tuple, kernel, grid: tuple, args: tuple, constexprs: dict, blk: int,
                     **options) -> None:
    """Launch a @triton.jit kernel through Triton's dispatch and keep the binary it returns under
    `key`, with the constexprs in the kernel's order (the launcher takes every parameter) and the
    grid's block size.  args: the positional (runtime) arguments; constexprs: every later
    parameter, by name; options: num_warps, num_stages.  A launch that leaves a parameter to its
    default, or returns no binary, is not kept (it goes through the dispatch every time)."""
    binary = kernel[grid](*args, **constexprs, **options)
    later = kernel.arg_names[len(args):]
    if binary is not None and set(later) == set(constexprs):
        _EAGER_BIN[key] = (binary, tuple(constexprs[n] for n in later), blk)


def _traceable(kernel, args: tuple):
    """The kernel itself for an eager launch; under torch.compile its wrap_triton form, which
    inductor traces (called eagerly, wrap_triton's higher-order-op dispatch costs ~0.1 ms)."""
    return kernel if _is_eager(args) else wrap_triton(kernel)


def _grid(name: str, grid_rows: int, bh: int):
    """The launch grid as the autotuner needs it: a function of the config's block sizes."""
    blk = _grid_block(name)
    return lambda META: (bh, triton.cdiv(grid_rows, META[blk]))


def _launch_delta(o: Tensor, do: Tensor, delta: Tensor, H: int, T: int, meta: dict) -> None:
    """delta_i = rowsum(dO_i * O_i), one small launch before the two backward kernels."""
    bh = delta.shape[0] * delta.shape[1]
    blk = 16 if K.INTERPRET else 128
    args = (o, do, delta, *_st(o), *_st(do), H, T)
    kw = dict(DV=meta["DV"], BDV=meta["BDV"], BLOCK_M=blk)
    grid = (bh, triton.cdiv(T, blk))
    if K.INTERPRET:
        if not _is_fake(args):
            K._ra_delta_kernel[grid](*args, **kw)
    elif _is_eager(args):
        key = ("delta", meta["DV"], blk, *_specialization(args))
        _launch_fixed(key, K._ra_delta_kernel, bh, T, blk, args, kw)
    else:
        wrap_triton(K._ra_delta_kernel)[grid](*args, **kw)


def _empty(size: tuple, *, device: torch.device, dtype: torch.dtype,
           stride: Optional[tuple] = None) -> Tensor:
    """Allocator for kernel outputs; tests swap it for a NaN-filling one (poisoned outputs).
    stride: a layout other than the contiguous one, allocated as such (no view op after it:
    each op is host time in eager calls)."""
    if stride is None:
        return torch.empty(size, device=device, dtype=dtype)
    return torch.empty_strided(size, stride, device=device, dtype=dtype)


def _bthd(B: int, H: int, T: int, D: int, like: Tensor) -> Tensor:
    """A (B, H, T, D) tensor stored in (B, T, H, D) memory: the layout the kernels write O and
    the gradients in (the model's q/k/v are such views of its qkv projection)."""
    return _empty((B, H, T, D), stride=(T * H * D, D, H * D, 1), device=like.device, dtype=like.dtype)


def _bthd_zeros(B: int, H: int, T: int, D: int, like: Tensor) -> Tensor:
    """_bthd's layout as a zeroed float32 tensor: the one-pass backward's atomic accumulators."""
    return torch.zeros((B, T, H, D), device=like.device, dtype=torch.float32).transpose(1, 2)


def _none(like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An empty result for an absent gradient; a fresh one each time (a custom op's outputs
    must not alias each other)."""
    return like.new_empty(0, dtype=dtype)


# Eager launches' scratch arguments, one per (device, dtype): see _scratch.
_EAGER_SCRATCH: dict[tuple, Tensor] = {}


def _scratch(like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """A one-element stand-in for a kernel output the launch does not write (never an op's
    output).  Traced, each gets its own: under torch.compile each written kernel argument is
    functionalised separately, and two arguments sharing one written tensor could copy a stale
    clone over the real result.  On real tensors one kept tensor serves them all (nothing writes
    it): an allocation less each, host time in eager calls."""
    dtype = dtype or like.dtype
    if not _is_eager((like,)):
        return _empty((1,), device=like.device, dtype=dtype)
    key = (like.device, dtype)
    if key not in _EAGER_SCRATCH:
        _EAGER_SCRATCH[key] = _empty((1,), device=like.device, dtype=dtype)
    return _EAGER_SCRATCH[key]


def _pow2(d: int) -> int:
    # plain Python: triton.next_power_of_2 is a jit-callable and costs ~10 us a call
    return max(16, 1 << (d - 1).bit_length())


def _st(x: Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _unit_last(x: Optional[Tensor]) -> Optional[Tensor]:
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()


def _meta(q1, q2, v, bias, band, sc1) -> dict:
    D1 = q1.shape[-1]
    D2 = q2.shape[-1] if q2 is not None else 16
    DV = v.shape[-1]
    return dict(D1=D1, BD1=_pow2(D1), D2=D2, BD2=_pow2(D2), DV=DV, BDV=_pow2(DV),
                HAS_REC=q2 is not None, HAS_BAND=band > 0, HAS_BIAS=_bias_form(bias),
                HAS_SCALE=sc1 is not None)


def _bias_form(bias: Optional[Tensor]) -> int:
    """The kernels' HAS_BIAS: 0 none, 1 a (B, H, T) row per head, 2 a vector u (H, D1) with
    bias_j = k1_j . u computed in the kernels."""
    return 0 if bias is None else (2 if bias.dim() == 2 else 1)


# ----------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------
def _reciprocal_pair(q1, k1, q2, k2, tied: bool):
    """The kernels' (q2, k2): canonical RA's tied pair reads q1 and k1 again, swapped."""
    return (k1, q1) if tied else (q2, k2)


def ra_forward(q1, k1, q2, k2, v, bias, sc1, sc2, band: int, tied: bool = False):
    """Returns (o, lse2): o (B, H, T, Dv) in v.dtype; lse2 (B, H, T) float32 in log2 units.
    sc1, sc2: per-head float32 scales (H,) of q1 and q2, or None."""
    q1, k1, q2, k2, v = (_unit_last(x) for x in (q1, k1, q2, k2, v))
    q2, k2 = _reciprocal_pair(q1, k1, q2, k2, tied)
    B, H, T, _ = q1.shape
    o = _bthd(B, H, T, v.shape[-1], v)
    lse = _empty((B, H, T), device=v.device, dtype=torch.float32)
    if T == 0 or B * H == 0:
        return o, lse
    # absent inputs: any read-only tensor stands in (the kernel never touches it)
    bias_c = bias.contiguous() if bias is not None else v
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    sc1_ = sc1.contiguous() if sc1 is not None else v
    sc2_ = sc2.contiguous() if (sc2 is not None and q2 is not None) else sc1_
    args = (q1, k1, q2_, k2_, v, bias_c, sc1_, sc2_, o, lse,
            *_st(q1), *_st(k1), *_st(q2_), *_st(k2_), *_st(v), *_st(o),
            H, T, band)
    _launch("fwd", T, B * H, args, _meta(q1, q2, v, bias, band, sc1))
    return o, lse


def ra_backward(do, q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, band: int, tied: bool = False,
                rows: bool = False):
    """Gradients (dq1, dk1, dq2, dk2, dv, dbias, dscale), all true gradients: with scales
    the kernels apply the chain rule, and dscale (H, 2) holds dL/dsc1, dL/dsc2 (empty
    without scales).  tied: dq1 and dk1 are the whole gradients of q1 and k1 (each also
    played q2's or k2's part), assembled in the kernels; dq2, dk2 are empty.
    rows: dbias and dscale as the kernels leave them, per key row, (B, H, T) and (B, H, T, 2),
    for a caller that sums them itself (ra_gated_eager's gate kernel).
    One-pass or two-pass backward as backward_mode() says (module docstring)."""
    q1, k1, q2, k2, v, o, do = (_unit_last(x) for x in (q1, k1, q2, k2, v, o, do))
    q2, k2 = _reciprocal_pair(q1, k1, q2, k2, tied)
    B, H, T, D1 = q1.shape
    f32 = dict(device=q1.device, dtype=torch.float32)
    # dL/dbias_j per key row, for either bias form (form 2, bias_j = k1_j . u, reduces it to
    # dL/du below; in the two-pass backward its dkdv kernel also writes the bias row, which the
    # dq kernel reads as form 1)
    from_k = _bias_form(bias) == 2
    dbias = _empty((B, H, T), **f32) if bias is not None else _none(q1, torch.float32)
    # the scales' per-row partial sums (B, H, T, 2), summed below
    dsc = _empty((B, H, T, 2), **f32) if sc1 is not None else _none(q1, torch.float32)
    dv = _bthd(B, H, T, v.shape[-1], v)
    if T == 0 or B * H == 0:
        grads = (_bthd(B, H, T, D1, q1), _bthd(B, H, T, D1, k1),
                 _bthd(B, H, T, q2.shape[-1], q2) if q2 is not None and not tied else _none(q1),
                 _bthd(B, H, T, k2.shape[-1], k2) if k2 is not None and not tied else _none(q1), dv)
        if rows:
            return (*grads, dbias, dsc)
        dbias_out = torch.zeros_like(bias, dtype=torch.float32) if from_k else dbias
        return (*grads, dbias_out, q1.new_zeros((H, 2), dtype=torch.float32) if sc1 is not None else dsc)
    meta = _meta(q1, q2, v, bias, band, sc1)

    delta = _empty((B, H, T), **f32)
    _launch_delta(o, do, delta, H, T, meta)

    # absent inputs: any read-only tensor stands in (the kernels never touch it); absent
    # outputs: _scratch
    q2_ = q2 if q2 is not None else q1
    k2_ = k2 if k2 is not None else k1
    sc1_ = sc1.contiguous() if sc1 is not None else lse
    sc2_ = sc2.contiguous() if (sc2 is not None and q2 is not None) else sc1_
    bias_c = bias.contiguous() if bias is not None else lse
    ins = (q1, k1, q2_, k2_, v, bias_c, sc1_, sc2_, do, lse, delta)
    strides = (*_st(q1), *_st(k1), *_st(q2_), *_st(k2_), *_st(v), *_st(do), H, T, band)
    outs = (dv, dbias if bias is not None else _scratch(q1, torch.float32),
            dsc if sc1 is not None else _scratch(q1, torch.float32))
    if backward_mode() == "one-pass":
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
    acc1 = _bthd_zeros(B, H, T, D1, q1)  # tied: q's whole gradient
    if tied:
        acc2 = _bthd_zeros(B, H, T, D1, q1)  # k's whole gradient
        dk1, dk2 = _scratch(q1), _scratch(q1)  # the column sides go into acc1, acc2 too
    else:
        acc2 = _bthd_zeros(B, H, T, D2, q1) if has_rec else _scratch(q1, torch.float32)
        dk1 = _bthd(B, H, T, D1, k1)
        dk2 = _bthd(B, H, T, D2, q2) if has_rec else _scratch(q1)
    dv, dbias, dsc = outs
    _launch("onepass", T, B * H,
            (*ins, dk1, dk2, dv, dbias, _scratch(q1, torch.float32), acc1, acc2, dsc, *strides),
            dict(meta, ROW_ATOMIC=True, TIED=tied))
    if tied:
        return acc1.to(q1.dtype), acc2.to(k1.dtype), _none(q1), _none(q1), dv
    if not has_rec:
        return acc1.to(q1.dtype), dk1, _none(q1), _none(q1), dv
    return acc1.to(q1.dtype), dk1, acc2.to(q2.dtype), dk2, dv


def _two_pass(ins: tuple, strides: tuple, outs: tuple[Tensor, Tensor, Tensor], has_rec: bool,
              tied: bool, from_k: bool, meta: dict) -> _Grads:
    """The dkdv kernel (column sides), then the dq kernel (row sides, the scales' sums and, tied,
    the whole dq and dk): no atomics.  ins, outs as in _one_pass."""
    q1, k1, q2, k2, v, bias_c, sc1, sc2, do, lse, delta = ins
    B, H, T, D1 = q1.shape
    D2 = q2.shape[-1]
    dq1 = _bthd(B, H, T, D1, q1)
    dk1 = _bthd(B, H, T, D1, k1)
    dq2 = _bthd(B, H, T, D2, q2) if has_rec and not tied else _scratch(q1)
    dk2 = _bthd(B, H, T, D2, k2) if has_rec else _scratch(q1)
    brow = _empty((B, H, T), device=q1.device, dtype=torch.float32) if from_k \
        else _scratch(q1, torch.float32)
    dv, dbias, dsc = outs
    _launch("dkdv", T, B * H,
            (*ins, dk1, dk2, dv, dbias, brow, _scratch(q1, torch.float32),
             _scratch(q1, torch.float32), _scratch(q1, torch.float32), *strides),
            dict(meta, ROW_ATOMIC=False, TIED=False))
    # tied: dq -> DQ1 and dk -> DQ2, reading dkdv's dk1, dk2 (read-only here, scratch after)
    dq_out = (dq1, _bthd(B, H, T, D1, k1)) if tied else (dq1, dq2)
    _launch("dq", T, B * H,
            (q1, k1, q2, k2, v, brow if from_k else bias_c, sc1, sc2, do, lse, delta, *dq_out,
             dk1, dk2, dsc, *strides),
            dict(meta, TIED=tied, HAS_BIAS=1 if from_k else meta["HAS_BIAS"]))
    if tied:
        return dq_out[0], dq_out[1], _none(q1), _none(q1), dv
    if not has_rec:
        return dq1, dk1, _none(q1), _none(q1), dv
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
# tensors: see _launch).  Either way there is one op, one autograd formula, one launcher.
def _register(name: str, fn):
    if K.INTERPRET:
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op
    return torch.library.triton_op(name, fn, mutates_args=())


def _ra_fwd(q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor], v: Tensor,
            bias: Optional[Tensor], sc1: Optional[Tensor], sc2: Optional[Tensor], band: int,
            tied: bool) -> tuple[Tensor, Tensor]:
    return ra_forward(q1, k1, q2, k2, v, bias, sc1, sc2, band, tied)


def _ra_bwd(do: Tensor, q1: Tensor, k1: Tensor, q2: Optional[Tensor], k2: Optional[Tensor],
            v: Tensor, bias: Optional[Tensor], sc1: Optional[Tensor], sc2: Optional[Tensor],
            o: Tensor, lse: Tensor, band: int, tied: bool
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return ra_backward(do, q1, k1, q2, k2, v, bias, sc1, sc2, o, lse, band, tied)


ra_fwd_op = _register("rabench::ra_fwd", _ra_fwd)
ra_bwd_op = _register("rabench::ra_bwd", _ra_bwd)


def _setup_context(ctx, inputs, output):
    q1, k1, q2, k2, v, bias, sc1, sc2, band, tied = inputs
    o, lse = output
    ctx.band = band
    ctx.tied = tied
    ctx.has_scale = sc1 is not None
    # lse is an internal statistic nobody differentiates: leave its gradient None instead of
    # a materialised zero tensor (one less allocation and fill per backward)
    ctx.set_materialize_grads(False)
    ctx.has_rec = q2 is not None
    ctx.has_bias = bias is not None
    ctx.save_for_backward(q1, k1, q2, k2, v, bias, sc1, sc2, o, lse)


def _backward_through(bwd):
    """The autograd formula, with the backward launcher it calls: the op (compiled code) or the
    plain function (eager: see _EagerRA)."""
    def backward(ctx, do, dlse):
        # dlse is never used by callers (lse is an internal statistic); ra_attention returns o
        # only. Every gradient comes back whole from the kernels (scales' chain rule, tied q/k
        # sums), so under torch.compile nothing is left to assemble but the qkv concatenation
        # sdpa has too.
        q1, k1, q2, k2, v, bias, sc1, sc2, o, lse = ctx.saved_tensors
        if do is None:  # o did not reach the loss
            return (None,) * 10
        dq1, dk1, dq2, dk2, dv, dbias, dscale = bwd(do, q1, k1, q2, k2, v, bias, sc1, sc2,
                                                    o, lse, ctx.band, ctx.tied)
        dsc1 = dscale[:, 0] if ctx.has_scale else None
        dsc2 = dscale[:, 1] if (ctx.has_scale and sc2 is not None) else None
        return (dq1, dk1, dq2 if ctx.has_rec else None, dk2 if ctx.has_rec else None, dv,
                dbias if ctx.has_bias else None, dsc1, dsc2, None, None)
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
    def forward(ctx, q1, k1, q2, k2, v, bias, sc1, sc2, band, tied):
        inputs = (q1, k1, q2, k2, v, bias, sc1, sc2, band, tied)
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
                 tied: bool = False) -> Tensor:
    """Causal attention with two bilinear scores and a column bias:

        L_ij = s1_h q1_i.k1_j + [band is None or i-j < band] * s2_h q2_i.k2_j + bias_j  (j <= i)
        O_i  = sum_j softmax_j(L_i.) v_j

    tied=True is canonical RA's form, q2 = k1 and k2 = q1 (pass q2 = k2 = None): the second
    score is s2_h k1_i.q1_j, and the backward returns q1's and k1's whole gradients straight
    from the kernels (each tensor plays two parts; the dq kernel adds the two).

    q1, k1: (B, H, T, D1); q2, k2: (B, H, T, D2) or both None; v: (B, H, T, Dv);
    bias: (B, H, T), or a per-head vector u of shape (H, D1) meaning bias_j = k1_j . u (computed
    in the kernels from the key tiles: canonical RA's discoverability), or None; cast to float32.  scale1, scale2: per-head scales s1, s2 of shape
    (H,) (cast to float32, differentiable), applied inside the kernel; None means 1 (scale2 is
    required with scale1 when q2 is given).  Inputs may be strided views with a unit last stride
    (no copies are made).  Returns (B, H, T, Dv) in v.dtype.
    """
    if (q2 is None) != (k2 is None):
        raise RabenchError("ra_attention: pass both q2 and k2, or neither")
    if tied and q2 is not None:
        raise RabenchError("ra_attention: tied=True uses q2 = k1 and k2 = q1; pass q2 = k2 = None")
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
    scale1 = scale1.float() if scale1 is not None else None
    scale2 = scale2.float() if (scale2 is not None and has_rec) else None
    band_i = _band_arg(band, T, has_rec)
    # eager calls skip the op's dispatch (same launchers and formula); compiled code sees the op
    attend = ra_fwd_op if torch.compiler.is_compiling() else _EagerRA.apply
    o, _ = attend(q1, k1, q2, k2, v, bias, scale1, scale2, band_i, bool(tied))
    return o


def _band_arg(band: Optional[int], T: int, has_rec: bool) -> int:
    """The ops' band: 0 for none.  i - j <= T - 1 for every pair, so a band >= T masks nothing,
    and without a reciprocal term there is nothing to mask."""
    return 0 if (band is None or band >= T or not has_rec) else band


# ----------------------------------------------------------------------------------------
# canonical RA from its gate logits, eager (kernels/gates.py)
# ----------------------------------------------------------------------------------------
def _launch_gates(kernel, name: str, H: int, args: tuple, D: int, rec: bool, **block) -> None:
    """One program per head; on a GPU through the kept binary (_EAGER_BIN) like the other eager
    launches (only eager calls come here: _EagerGatedRA).  block: a kernel's block sizes."""
    kw = dict(BD=_pow2(D), REC=rec, **block)
    if K.INTERPRET:
        kernel[(H,)](*args, **kw)
        return
    _launch_fixed((name, rec, *_specialization(args)), kernel, H, 1, 1, args, kw)


def gate_inputs(logits: Tensor, u: Tensor, c: float, cm: float, rec: bool
                ) -> tuple[Tensor, Optional[Tensor], Tensor]:
    """(s1, s2, ub) of kernels/gates.py from the gate logits (H, 3) and u (H, D), float32;
    s2 is None without the reciprocal term.  cm = c times the reciprocal term's multiplier."""
    H, D = u.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    s1, ub = _empty((H,), **f32), _empty((H, D), **f32)
    s2 = _empty((H,), **f32) if rec else None
    _launch_gates(KG._gate_fwd_kernel, "gate_fwd", H,
                  (logits, u, s1, s2 if rec else s1, ub, c, cm, D), D, rec)
    return s1, s2, ub


def gate_grads(logits: Tensor, u: Tensor, k: Tensor, dbias: Tensor, dsc: Tensor, c: float,
               cm: float, rec: bool) -> tuple[Tensor, Tensor]:
    """(dL/dlogits (H, 3), dL/du (H, D)) from the RA kernels' per-row sums (ra_backward's rows):
    dbias (B, H, T) dL/dbias_j and dsc (B, H, T, 2), with the keys k (B, H, T, D) that made the
    bias (dL/dub = sum over b, j of dbias_j k_j, summed in the kernel)."""
    B, H, T, D = k.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    dg, du = _empty((H, 3), **f32), _empty((H, D), **f32)
    _launch_gates(KG._gate_bwd_kernel, "gate_bwd", H,
                  (logits, u, k, dbias, dsc, dg, du, c, cm, B, H, T, *_st(k), D), D, rec,
                  BLOCK_T=16 if K.INTERPRET else 64)
    return dg, du


class _EagerGatedRA(torch.autograd.Function):
    """Canonical RA (or, rec=False, without its reciprocal term) from the gate logits and u:
    the gate kernels around the RA kernels' launchers, nothing else on the host."""

    @staticmethod
    def forward(ctx, q, k, v, logits, u, c, cm, band, rec):
        s1, s2, ub = gate_inputs(logits, u, c, cm, rec)
        o, lse = ra_forward(q, k, None, None, v, ub, s1, s2, band, rec)
        ctx.save_for_backward(q, k, v, ub, s1, s2, o, lse, logits, u)
        ctx.c, ctx.cm, ctx.band, ctx.rec = c, cm, band, rec
        return o

    @staticmethod
    def backward(ctx, do):
        if do is None:
            return (None,) * 9
        q, k, v, ub, s1, s2, o, lse, logits, u = ctx.saved_tensors
        dq, dk, _, _, dv, dbias, dsc = ra_backward(do, q, k, None, None, v, ub, s1, s2, o, lse,
                                                   ctx.band, ctx.rec, rows=True)
        dg, du = gate_grads(logits, u, _unit_last(k), dbias, dsc, ctx.c, ctx.cm, ctx.rec)
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
    two launches.  q, k, v: (B, H, T, D) with a unit last stride (views of a qkv projection);
    logits (H, 3) and u (H, D) float32, differentiable.  Returns (B, H, T, D) in v.dtype."""
    _check_device(q)
    band_i = _band_arg(band, q.shape[2], reciprocal)
    return _EagerGatedRA.apply(q, k, v, logits.contiguous(), u.contiguous(), float(scale),
                               float(scale) * float(rec_mult), band_i, bool(reciprocal))
