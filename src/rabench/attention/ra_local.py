"""Plan direction 2: local reciprocity window.

    L_ij = w_std S_ij + [i - j < W] w_rec S_ji + w_disc d_j      (j <= i)

The standard term and the discoverability bias see the whole causal prefix; the
reciprocal term only the last W keys (the key itself included). The window is the
fused kernel's `band`, so tiles that lie wholly outside it skip the second score
product in the forward and in both backward passes. The plan's "+-128" is one-sided
here: causality already removes the keys after i, so window=128 is its 256-wide band.
"""

from __future__ import annotations

from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import banded_reciprocal_flops
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError


@register("ra-local", "RA whose reciprocal term only spans the last `window` keys (kernel band)",
          family="ra", variant=True, window=128, backend="auto")
class RALocalAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE

    @classmethod
    def attention_flops(cls, spec: AttentionSpec, seq_len: int) -> float:
        """Standard attention's 7 products per causal pair, plus the reciprocal term's 4 inside the band."""
        return banded_reciprocal_flops(seq_len, spec.head_dim, spec.n_head, spec.options["window"])

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.window, self.backend = options["window"], options["backend"]
        if self.window < 1:
            raise RabenchError(f"ra-local: window must be >= 1, got {self.window}")
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, band=self.window)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        return run_canonical_ra(q, k, v, self.gates, self.scale, band=self.window, backend=self.backend)
