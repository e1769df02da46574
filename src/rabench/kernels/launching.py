"""Launching one Triton kernel, three ways: traced under torch.compile (wrap_triton, so
inductor sees the kernel), eager through kept binaries (no per-call dispatch in Triton), and
under the interpreter on the CPU with fixed tiles.
"""

from __future__ import annotations

import torch
import triton
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import wrap_triton

from . import ra_flash as K
from . import tuning

Tensor = torch.Tensor


def is_fake(args: tuple) -> bool:
    return any(isinstance(a, FakeTensor) for a in args)


_REAL = (torch.Tensor, torch.nn.Parameter)


def is_eager(args: tuple) -> bool:
    """True for a launch on real tensors outside torch.compile's tracing (whose fake and
    functional tensors are Tensor subclasses): the only launches the eager fast path serves.
    A Parameter is real: the gate kernels' first argument is the gate logits (on an H100 the
    gated route's two gate launches went through wrap_triton's dispatch while it was not)."""
    return type(args[0]) in _REAL and not torch.compiler.is_compiling()


def launch(name: str, grid_rows: int, bh: int, args: tuple, meta: dict) -> None:
    """Launch one kernel over (batch*heads, row blocks).  On a GPU under torch.compile the
    launch goes through torch.library.wrap_triton (a traced kernel call, visible to inductor);
    eager launches call the kernel itself (_launch_eager, _traceable)."""
    if K.INTERPRET:
        if is_fake(args):  # the custom_op's fake implementation: shapes only, no launch
            return
        fixed = tuning.INTERP_BLOCKS[name]
        grid = (bh, triton.cdiv(grid_rows, fixed[tuning.grid_block(name)]))
        tuning.RAW[name][grid](*args, **meta, **fixed, INTERP=True)
        return
    if name in tuning.FORCED:
        m, n, w, s = tuning.FORCED[name]
        blk = {"BLOCK_M": m, "BLOCK_N": n}[tuning.grid_block(name)]
        _traceable(tuning.RAW[name], args)[(bh, triton.cdiv(grid_rows, blk))](
            *args, **meta, BLOCK_M=m, BLOCK_N=n, INTERP=False, num_warps=w, num_stages=s)
        return
    size = "small" if max(meta["BD1"], meta["BD2"], meta["BDV"]) <= 64 else "large"
    if is_eager(args):
        _launch_eager(name, size, grid_rows, bh, args, meta)
        return
    wrap_triton(tuning.tuned_kernel(name, size))[_grid(name, grid_rows, bh)](*args, **meta, INTERP=False)


def launch_untuned(kernel, key: tuple, bh: int, grid_rows: int, blk: int, args: tuple,
                   constexprs: dict) -> None:
    """A kernel with one fixed config (no autotuning: the delta pre-pass, the gate kernels) over
    (bh, row blocks of blk), launched as the call needs: interpreted (skipped on fake tensors),
    through the kept binary in eager calls, traced under torch.compile.  key: what decides the
    binary besides the arguments' specialization (the kernel and the constexprs that vary)."""
    grid = (bh, triton.cdiv(grid_rows, blk))
    if K.INTERPRET:
        if not is_fake(args):
            kernel[grid](*args, **constexprs)
    elif is_eager(args):
        _launch_fixed((*key, *specialization(args)), kernel, bh, grid_rows, blk, args, constexprs)
    else:
        wrap_triton(kernel)[grid](*args, **constexprs)


# ----------------------------------------------------------------------------------------
# eager launches: kept binaries
# ----------------------------------------------------------------------------------------
# Eager launches skip Triton's per-call dispatch.  JITFunction.run binds every argument to the
# kernel's signature, specializes each one and hashes them to find the compiled binary: about
# 70 us of host time a launch on an H100 machine, four launches a layer
# (benchmarks/host_overhead_profile.py); the autotuner's run adds its own dicts on top.  So an
# eager launch keys the call itself by what decides the binary (specialization) and keeps,
# per key, the autotuner's winner (_EAGER_CFG: the key's first launch autotunes) and then the
# binary Triton returns (_EAGER_BIN: its second launch goes through Triton's dispatch); from the
# third launch on it calls the binary, CompiledKernel[grid], Triton's own launcher, with every
# argument in the kernel's order, as JITFunction.run does.
_EAGER_CFG: dict[tuple, triton.Config] = {}
_EAGER_BIN: dict[tuple, tuple] = {}  # key -> (binary, constexprs in the kernel's order, grid block)


def specialization(args: tuple) -> tuple:
    """What Triton specializes a compiled kernel on, per positional argument: a tensor's dtype
    and 16-byte alignment; an int's value (Triton looks only at whether it is 1, divisible by
    16, and fits 32 bits, which the value decides); a float's type only (always fp32)."""
    return tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor)
                 else (float if type(a) is float else a) for a in args)


def _launch_eager(name: str, size: str, grid_rows: int, bh: int, args: tuple, meta: dict) -> None:
    """An eager launch of one of the tuned kernels over (bh, row blocks): see _EAGER_BIN."""
    key = (name, *meta.values(), *specialization(args))
    if _call_kept(key, bh, grid_rows, args):
        return
    cfg = _EAGER_CFG.get(key)
    if cfg is None:
        kern = tuning.tuned_kernel(name, size)
        kern[_grid(name, grid_rows, bh)](*args, **meta, INTERP=False)
        _EAGER_CFG[key] = kern.best_config
        return
    blk = cfg.kwargs[tuning.grid_block(name)]
    _launch_and_keep(key, tuning.RAW[name], (bh, triton.cdiv(grid_rows, blk)), args,
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
    return kernel if is_eager(args) else wrap_triton(kernel)


def _grid(name: str, grid_rows: int, bh: int):
    """The launch grid as the autotuner needs it: a function of the config's block sizes."""
    blk = tuning.grid_block(name)
    return lambda META: (bh, triton.cdiv(grid_rows, META[blk]))
