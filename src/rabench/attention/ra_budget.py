"""Plan idea A: a reciprocity budget, spent by a learned scorer.

    z_i  = (W x_i + b)_h                    scorer Linear(C, H) on the block input x, per head
    K    = max(1, round(k T))               the budget: tokens per (batch, head) with reciprocity
    r_i  = sigmoid(z_i)  if z_i is among the K largest of its sequence (for that head), else 0
    L_ij = w_std S_ij + r_i w_rec S_ji + w_disc d_j          (j <= i)

The selection is a top-K (no gradient); the scorer learns through sigmoid(z_i) on the
selected rows, which scales their reciprocal term. r folds into the kernel's q2 rows
(exact), so this runs through the fused kernel; the kernel still visits every row, so no
speedup from the skipped rows is expected: it measures whether a budgeted reciprocity
keeps RA's quality.

Not causal: whether token i is selected depends on the scores of the whole sequence,
later tokens included, as the plan's top-K over T does. No gradient crosses the
selection, so the model cannot learn to use that channel, but each row's output does
depend on the future through it (and the layer cannot be run token by token).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rabench.attention.base import AttentionCore
from rabench.attention.common import upcast
from rabench.attention.fused import ra_operands, run_ra
from rabench.attention.gates import RAGates
from rabench.attention.registry import AttentionSpec, register, resolve_options
from rabench.errors import RabenchError


def budget_gate(scores: Tensor, k: float) -> Tensor:
    """(B, H, T) scores -> row gate: sigmoid(score) on each (b, h)'s top max(1, round(k T)) tokens, 0 elsewhere."""
    t = scores.shape[-1]
    n = min(t, max(1, math.floor(k * t + 0.5)))  # round half up
    chosen = torch.zeros_like(scores).scatter_(-1, scores.detach().topk(n, dim=-1).indices, 1.0)
    return torch.sigmoid(scores) * chosen


@register("ra-budget", "RA whose reciprocal term reaches only the top-k fraction of tokens picked by a learned scorer",
          family="ra", k=0.10, backend="auto")
class RABudgetAttention(AttentionCore):
    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = resolve_options("ra-budget", spec.options)
        self.k, self.backend = options["k"], options["backend"]
        if not 0.0 < self.k <= 1.0:
            raise RabenchError(f"ra-budget: k must be in (0, 1], got {self.k}")
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.scorer = nn.Linear(spec.n_embd, spec.n_head)
        nn.init.normal_(self.scorer.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.scorer.bias)

    def row_gate(self, x: Tensor) -> Tensor:
        """r per (B, H, T) from x (B, T, C)."""
        return budget_gate(upcast(self.scorer(x.to(self.scorer.weight.dtype))).transpose(1, 2), self.k)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        q1, k1, q2, k2, bias = ra_operands(q, k, self.gates, self.scale, row_gate=self.row_gate(x))
        return run_ra(q1, k1, q2, k2, v, bias, backend=self.backend)
