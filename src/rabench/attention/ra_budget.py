"""Plan idea A: a reciprocity budget, spent by a learned scorer.

    z_i  = (W x_i + b)_h                    scorer Linear(C, H) on the block input x, per head
    n_i  = max(1, round(k (i + 1)))         the budget among the first i + 1 tokens
    r_i  = sigmoid(z_i)  if fewer than n_i of z_0..z_i exceed z_i (z_i is in the top k of
           its prefix), else 0
    L_ij = w_std S_ij + r_i w_rec S_ji + w_disc d_j          (j <= i)

The plan ranks tokens over the whole sequence (top-K of T); that would let the future
decide whether row i gets reciprocity, a leak a causal language model must not have. Here
each token is ranked against its prefix only, so the budget is k of the tokens seen so far
(k T in expectation, not exactly). The selection has no gradient; the scorer learns
through sigmoid(z_i) on the selected rows, which scales their reciprocal term. r folds into
the kernel's q2 rows (exact), so this runs through the fused kernel; the kernel still visits
every row, so no speedup from the skipped rows is expected: it measures whether a budgeted
reciprocity keeps RA's quality.
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
from rabench.errors import RabenchError


def budget_gate(scores: Tensor, k: float) -> Tensor:
    """(B, H, T) scores -> row gate: sigmoid(z_i) where z_i is in the top k of z_0..z_i, 0 elsewhere."""
    t = scores.shape[-1]
    z = scores.detach()
    prefix = torch.ones(t, t, dtype=torch.bool, device=z.device).tril()  # [i, j]: j <= i
    higher = ((z.unsqueeze(-2) > z.unsqueeze(-1)) & prefix).sum(-1)  # #{j <= i : z_j > z_i}
    pos = torch.arange(1, t + 1, device=z.device, dtype=torch.float64)
    budget = torch.clamp(torch.floor(k * pos + 0.5), min=1).to(higher.dtype)  # round half up, at least 1
    return torch.sigmoid(scores) * (higher < budget).to(scores.dtype)


@register("ra-budget", "RA whose reciprocal term reaches only the top-k fraction of tokens picked by a learned scorer",
          family="ra", variant=True, k=0.10, backend="auto")
class RABudgetAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE
    pair_products = RA_PRODUCTS  # Full RA's count: the kernel still visits every row, budgeted or not.

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.k, self.backend = options["k"], options["backend"]
        if not 0.0 < self.k <= 1.0:
            raise RabenchError(f"ra-budget: k must be in (0, 1], got {self.k}")
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.scorer = nn.Linear(spec.n_embd, spec.n_head)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gates, then the scorer W ~ N(0, 0.02^2), b = 0, from `generator`."""
        super().reset_parameters(generator)
        init_linear(self.scorer, generator, weight_std=0.02, bias=0.0)

    def row_gate(self, x: Tensor) -> Tensor:
        """r per (B, H, T) from x (B, T, C)."""
        return budget_gate(upcast(self.scorer(x.to(self.scorer.weight.dtype))).transpose(1, 2), self.k)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, row_gate=self.row_gate(x))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        pair = row_gated_pair(q, k, self.row_gate(x))  # q2 = r k: the gate rides on the reciprocal operand
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, pair=pair)
