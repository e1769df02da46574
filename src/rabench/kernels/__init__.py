"""Fused Triton kernels: reciprocal attention as "two bilinear scores + column bias".

    ra_attention(q1, k1, q2, k2, v, bias, band=None) -> (B, H, T, Dv)
    ra_attention_available() -> (ok, reason)

Set TRITON_INTERPRET=1 before importing this package to run the kernels on CPU tensors.
"""

from .op import ra_attention, ra_attention_available

__all__ = ["ra_attention", "ra_attention_available"]
