"""Test 4: canonical RA through rabench's fused Triton kernel (forward and backward)."""

from __future__ import annotations

from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


@register("ra-triton", "RA through rabench's fused Triton kernel, forward and backward (Test 4)", family="ra",
          needs_gpu=True)
class RATritonAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE
    pair_products = RA_PRODUCTS  # Canonical RA's count, 11 products per causal pair (rabench.flops).

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        # gate scales applied inside the kernel: q and k are read in place, never copied
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend="triton")
