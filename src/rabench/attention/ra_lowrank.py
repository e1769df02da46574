"""Plan idea C: factorised (low-rank) reciprocity.

    S^T_ij = c q_j.k_i   ~   c (k_i W2_h).(q_j W1_h)        W1_h, W2_h: (D, r) per head
    L_ij   = w_std S_ij + w_rec c (k_i W2).(q_j W1) + w_disc d_j          (j <= i)

The kernel's reciprocal operands become q2 = k W2 and k2 = q W1, of head dim D2 = r (the
scale w_rec c stays the kernel's, as for canonical RA), so the second score product costs r/D
of the first (plus two thin (D x r) projections). W1 and W2 are learned; both start as the
same first r columns P of a random orthogonal matrix per head, so the initial reciprocal term
is RA's projected onto a random r-dim subspace: c (k_i P)(q_j P)^T = c k_i (P P^T) q_j^T. With
r = D, P P^T = I and the layer is canonical RA at init.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import low_rank_reciprocal_flops
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError


def orthogonal_columns(n_head: int, dim: int, rank: int, generator: torch.Generator | None = None) -> Tensor:
    """(H, D, r): per head, the first r columns of a random orthogonal D x D matrix."""
    mats = torch.empty(n_head, dim, dim)
    for h in range(n_head):
        nn.init.orthogonal_(mats[h], generator=generator)
    return mats[:, :, :rank].clone()


@register("ra-lowrank", "RA with a rank-r reciprocal term c (k W2).(q W1), through the kernel at D2 = r",
          family="ra", variant=True, rank=16, backend="auto")
class RALowRankAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE

    @classmethod
    def attention_flops(cls, spec: AttentionSpec, seq_len: int) -> float:
        """Standard attention's 7 products per causal pair, the reciprocal term's 4 at length r, and W1, W2."""
        return low_rank_reciprocal_flops(seq_len, spec.head_dim, spec.n_head, spec.options["rank"])

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.rank, self.backend = options["rank"], options["backend"]
        if not 1 <= self.rank <= spec.head_dim:
            raise RabenchError(f"ra-lowrank: rank must be in 1..{spec.head_dim} (the head dim), got {self.rank}")
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.w1 = nn.Parameter(torch.empty(spec.n_head, spec.head_dim, self.rank))  # (H, D, r): query side, k2 = q W1
        self.w2 = nn.Parameter(torch.empty(spec.n_head, spec.head_dim, self.rank))  # (H, D, r): key side, q2 = w_rec c k W2
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gates, then W1 = W2 = the same random orthonormal columns, from `generator`."""
        super().reset_parameters(generator)
        init = orthogonal_columns(self.spec.n_head, self.spec.head_dim, self.rank, generator)
        self.w1.copy_(init)
        self.w2.copy_(init)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """RA with the reciprocal score c (k_i W2).(q_j W1), open-coded (rabench check's float64 oracle)."""
        rec_scores = (k @ self.w2.to(k.dtype)) @ (q @ self.w1.to(q.dtype)).transpose(-2, -1) * self.scale
        return ra_definition(q, k, v, self.gates, self.scale, rec_scores=rec_scores)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        # the reciprocal pair (k W2, q W1) at head dim r; q, k and the gates go in as for ra-triton
        q2 = torch.einsum("bhtd,hdr->bhtr", k, self.w2.to(k.dtype))  # k W2: (B, H, T, r)
        k2 = torch.einsum("bhtd,hdr->bhtr", q, self.w1.to(q.dtype))  # q W1
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, pair=(q2, k2))
