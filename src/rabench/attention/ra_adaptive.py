"""Plan idea D: adaptive reciprocity, a per-token gate read from the hidden states.

    r_i  = sigmoid(W x_i + b)_h          W: (H, C) ~ N(0, 0.02^2), b = init_bias; per head
    L_ij = w_std S_ij + r_i w_rec S_ji + w_disc d_j          (j <= i)

x is the attention block's (layer-normed) input. The per-head gates w are kept; r adds
a per-token factor on top. By linearity r folds exactly into the kernel's q2 rows
(q2_i = r_i w_rec c k_i). init_bias = 2.0 starts at r ~ 0.88, close to canonical RA;
a very large init_bias gives r = 1, canonical RA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabench.attention.base import AttentionCore
from rabench.attention.common import init_linear, upcast
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, row_gated_pair, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


@register("ra-adaptive", "RA with a per-token row gate sigmoid(Linear(x) -> H) on the reciprocal term",
          family="ra", variant=True, init_bias=2.0, backend="auto")
class RAAdaptiveAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE
    # Full RA's count: the soft row gate skips nothing (its Linear(C, H) is left out).
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.backend = options["backend"]
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.gate_net = nn.Linear(spec.n_embd, spec.n_head)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gates, then W ~ N(0, 0.02^2) and b = init_bias, from `generator`."""
        super().reset_parameters(generator)
        init_linear(self.gate_net, generator, weight_std=0.02, bias=self.spec.options["init_bias"])

    def row_gate(self, x: Tensor) -> Tensor:
        """r_i per (B, H, T) from x (B, T, C)."""
        return torch.sigmoid(upcast(self.gate_net(x.to(self.gate_net.weight.dtype)))).transpose(1, 2)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, row_gate=self.row_gate(x))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        pair = row_gated_pair(q, k, self.row_gate(x))  # q2 = r k: the gate rides on the reciprocal operand
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, pair=pair)
