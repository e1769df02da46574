"""Which tiles each Triton kernel runs with, and which backward: the knobs benchmarks turn.

The autotuned kernels (tuned_kernel: candidates per head-dim class in CONFIGS, winners kept in
Triton's disk cache), the interpreter's fixed tiles (INTERP_BLOCKS), pins for tuning sweeps
(force_config) and the backward's mode (force_backward, backward_mode; op.py's docstring says
what the two modes do and why two-pass is the default).  launching.py reads these.
"""

from __future__ import annotations

from typing import Optional

import triton

from rabench.errors import RabenchError

from . import ra_flash as K

# Under the interpreter one small fixed config (BLOCK_M != BLOCK_N, so the multi-block
# diagonal logic is exercised by the CPU tests exactly as on the GPU).
_INTERP_FWD = dict(BLOCK_M=32, BLOCK_N=16)
_INTERP_DKDV = dict(BLOCK_M=16, BLOCK_N=32)
_INTERP_DQ = dict(BLOCK_M=32, BLOCK_N=16)
INTERP_BLOCKS = {"fwd": _INTERP_FWD, "dkdv": _INTERP_DKDV, "onepass": _INTERP_DKDV, "dq": _INTERP_DQ}


# kernel name -> Triton function; "onepass" is the dkdv kernel launched with ROW_ATOMIC
RAW = {"fwd": K._ra_fwd_kernel, "dkdv": K._ra_dkdv_kernel, "onepass": K._ra_dkdv_kernel,
       "dq": K._ra_dq_kernel}
_KEY_BLOCKS = ("dkdv", "onepass")  # one program per key block: the grid counts BLOCK_N


def grid_block(name: str) -> str:
    """The block size a kernel's grid counts: BLOCK_N for the key-block kernels, else BLOCK_M."""
    return "BLOCK_N" if name in _KEY_BLOCKS else "BLOCK_M"


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
_KEY = ["T", "D1", "D2", "DV", "HAS_REC", "HAS_BAND", "HAS_BIAS", "HAS_TBIAS"]  # HAS_BIAS: 0, 1 or 2

_tuned: dict[tuple[str, str], object] = {}


def tuned_kernel(name: str, size: str):
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
        _tuned[name, size] = tune(RAW[name])
    return _tuned[name, size]


_TUNED_KERNELS = ("fwd", "dkdv", "dq", "onepass")
# Explicit configs for tuning sweeps: {"fwd": (BM, BN, warps, stages), ...}; None = autotune.
FORCED: dict[str, tuple] = {}


def force_config(name: str, cfg: Optional[tuple]) -> None:
    """Pin one kernel ("fwd", "dkdv", "dq", "onepass") to (BLOCK_M, BLOCK_N, num_warps,
    num_stages).  A tile pair the kernel cannot step is refused: it would not fail, it would
    return wrong sums (the diagonal stage walks the smaller block inside the larger one)."""
    if name not in _TUNED_KERNELS:
        raise RabenchError(f"force_config: kernel must be one of {', '.join(_TUNED_KERNELS)}, "
                           f"got {name!r}")
    if cfg is None:
        FORCED.pop(name, None)
        return
    cfg = tuple(cfg)
    if len(cfg) != 4 or not _tiles_fit(name, cfg[0], cfg[1]):
        raise RabenchError(f"force_config: {name} needs (BLOCK_M, BLOCK_N, num_warps, num_stages) "
                           f"with {_tile_rule(name)}, got {cfg}")
    FORCED[name] = cfg


def _tile_rule(name: str) -> str:
    """_tiles_fit's rule in words, for the error message."""
    return "BLOCK_N % BLOCK_M == 0" if grid_block(name) == "BLOCK_N" else "BLOCK_M % BLOCK_N == 0"


def _tiles_fit(name: str, block_m: int, block_n: int) -> bool:
    """Whether the kernel's causal schedule can step these tiles (see CONFIGS): the block the
    grid counts (grid_block) is a multiple of the other."""
    grid, other = (block_n, block_m) if grid_block(name) == "BLOCK_N" else (block_m, block_n)
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
    bitwise repeatable: op.py's docstring)."""
    return _FORCED_BACKWARD or "two-pass"
