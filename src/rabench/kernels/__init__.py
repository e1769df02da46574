"""Fused Triton kernels: reciprocal attention as "two bilinear scores + column bias" (+ an
optional per-head tile bias, ra-amortized's cached pattern).

    ra_attention(q1, k1, q2, k2, v, bias, band=None, scale1=None, scale2=None, tied=False,
                 tile_bias=None) -> (B, H, T, Dv)
    ra_attention_available() -> (ok, reason)
    reference.ra_reference(...)      the same semantics in torch (the oracle; no Triton needed)
    eager_gated.ra_gated_eager(...)  canonical RA from its gate logits, eager calls (gates.py's
                                     small kernels do the gates' arithmetic;
                                     rabench.attention's kernel route calls it)

The modules, bottom up: ra_flash.py and gates.py (the Triton kernels, math beside the code),
tuning.py (tiles and backward mode), launching.py (traced, kept-binary or interpreted
launches), buffers.py (output tensors), op.py (the torch.library ops, autograd, ra_attention),
eager_gated.py; reference.py (the torch oracle) stands apart.

Set TRITON_INTERPRET=1 before the kernels first load (the first use of ra_attention or
ra_attention_available) to run them on CPU tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .op import ra_attention, ra_attention_available

__all__ = ["ra_attention", "ra_attention_available"]


def __getattr__(name: str) -> Any:
    """Load the Triton ops on first use: the torch oracle (reference.py) is the CPU route's
    definition and must import where Triton is absent (it is a Linux-only dependency)."""
    if name in __all__:
        from . import op

        return getattr(op, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
