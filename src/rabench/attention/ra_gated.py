"""Plan direction 3: learned reciprocity gating from query statistics.

    s_i = (mean_d q_id, std_d q_id, rms_d q_id)              per head, (B, H, T, 3)
    r_i = sigmoid(MLP(s_i))                                  MLP: 3 -> hidden -> 1, GELU,
                                                             shared by the heads of a layer
    L_ij = w_std S_ij + r_i w_rec S_ji + w_disc d_j          (j <= i)

The plan's "need_reciprocity[:, None] * S^T" is a row gate on the reciprocal term. By
linearity it folds exactly into the kernel's q2 rows (q2_i = r_i w_rec c k_i), so the
kernel is unchanged and the gate learns through autograd. The gate is soft, so nothing
is skipped: this measures whether a learned per-token gate helps, not a speedup.
The output bias starts at 2.0 (r ~ 0.88), so training starts close to canonical RA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

GATE_BIAS_INIT = 2.0
STAT_EPS = 1e-6


def query_stats(q: Tensor) -> Tensor:
    """(mean, std, rms) of each query vector over the head dim: (B, H, T, 3), float32 or better."""
    q = upcast(q)
    mean = q.mean(-1)
    std = (q.var(-1, unbiased=False) + STAT_EPS).sqrt()  # eps keeps d sqrt finite at 0
    rms = (q.square().mean(-1) + STAT_EPS).sqrt()
    return torch.stack([mean, std, rms], dim=-1)


@register("ra-gated", "RA with a per-token row gate sigmoid(MLP(query mean, std, rms)) on the reciprocal term",
          family="ra", variant=True, hidden=16, backend="auto")
class RAGatedAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE
    # Full RA's count: the soft row gate skips nothing (its small MLP is left out).
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.backend = options["backend"]
        if options["hidden"] < 1:
            raise RabenchError(f"ra-gated: hidden must be >= 1, got {options['hidden']}")
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.fc = nn.Linear(3, options["hidden"])
        self.out = nn.Linear(options["hidden"], 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gates, then the MLP with torch's Linear init (output bias GATE_BIAS_INIT), all from `generator`."""
        super().reset_parameters(generator)
        init_linear(self.fc, generator)
        init_linear(self.out, generator, bias=GATE_BIAS_INIT)

    def row_gate(self, q: Tensor) -> Tensor:
        """r_i per (B, H, T)."""
        h = F.gelu(self.fc(query_stats(q).to(self.fc.weight.dtype)))
        return torch.sigmoid(upcast(self.out(h))).squeeze(-1)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, row_gate=self.row_gate(q))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        pair = row_gated_pair(q, k, self.row_gate(q))  # q2 = r k: the gate rides on the reciprocal operand
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, pair=pair)
