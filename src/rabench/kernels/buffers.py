"""The kernels' output tensors and argument helpers: one allocator (tests poison it with
NaN), the (B, H, T, D) views of (B, T, H, D) memory the kernels write, and the scratch that
stands in for an output a launch does not write.
"""

from __future__ import annotations

from typing import Optional

import torch

from .launching import is_eager

Tensor = torch.Tensor


def empty(size: tuple, *, device: torch.device, dtype: torch.dtype,
          stride: Optional[tuple] = None) -> Tensor:
    """Allocator for kernel outputs; tests swap it for a NaN-filling one (poisoned outputs).
    stride: a layout other than the contiguous one, allocated as such (no view op after it:
    each op is host time in eager calls)."""
    if stride is None:
        return torch.empty(size, device=device, dtype=dtype)
    return torch.empty_strided(size, stride, device=device, dtype=dtype)


def bthd(B: int, H: int, T: int, D: int, like: Tensor) -> Tensor:
    """A (B, H, T, D) tensor stored in (B, T, H, D) memory: the layout the kernels write O and
    the gradients in (the model's q/k/v are such views of its qkv projection)."""
    return empty((B, H, T, D), stride=(T * H * D, D, H * D, 1), device=like.device, dtype=like.dtype)


def bthd_zeros(B: int, H: int, T: int, D: int, like: Tensor) -> Tensor:
    """bthd's layout as a zeroed float32 tensor: the one-pass backward's atomic accumulators."""
    return torch.zeros((B, T, H, D), device=like.device, dtype=torch.float32).transpose(1, 2)


def absent(like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An empty result for an absent gradient; a fresh one each time (a custom op's outputs
    must not alias each other)."""
    return like.new_empty(0, dtype=dtype)


# Eager launches' scratch arguments, one per (device, dtype): see scratch.
_EAGER_SCRATCH: dict[tuple, Tensor] = {}


def scratch(like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """A one-element stand-in for a kernel output the launch does not write (never an op's
    output).  Traced, each gets its own: under torch.compile each written kernel argument is
    functionalised separately, and two arguments sharing one written tensor could copy a stale
    clone over the real result.  On real tensors one kept tensor serves them all (nothing writes
    it): an allocation less each, host time in eager calls."""
    dtype = dtype or like.dtype
    if not is_eager((like,)):
        return empty((1,), device=like.device, dtype=dtype)
    key = (like.device, dtype)
    if key not in _EAGER_SCRATCH:
        _EAGER_SCRATCH[key] = empty((1,), device=like.device, dtype=dtype)
    return _EAGER_SCRATCH[key]


def pow2(d: int) -> int:
    # plain Python: triton.next_power_of_2 is a jit-callable and costs ~10 us a call
    return max(16, 1 << (d - 1).bit_length())


def bht_strides(*xs: Tensor) -> tuple[int, ...]:
    """Each (B, H, T, D) tensor's first three strides, in order, as the kernels take them (their
    last stride is 1)."""
    out: tuple[int, ...] = ()
    for x in xs:  # a loop, not a generator: this runs for every launch (host time in eager calls)
        out += x.stride()[:3]
    return out


def unit_last(x: Optional[Tensor]) -> Optional[Tensor]:
    """x itself when its last stride is 1 (a strided view is fine), else a contiguous copy."""
    if x is None:
        return None
    return x if x.stride(-1) == 1 else x.contiguous()
