"""The control: standard attention with RA's learned w_std gate and nothing else.

RA's w_std < 1 is learned, so RA also gives each head a learned temperature. This
module has exactly that and no reciprocity, which separates "reciprocity helps" from
"a learned temperature helps".

The gate is a per-head scale of q, so it folds its query map (`folds_query`, `query_affine`):
inside the model the block folds it into the query rows of its projection (q = x (w_std W_q)^T
+ w_std b_q, the same math) and calls `attend`, so SDPA gets q, k and v as the same views of one
projection as sdpa's, with no activation-sized multiply in the forward or a reduction over q in
the backward.
Called as a module (`rabench check`, tests) the core scales q itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rabench.attention.base import AttentionCore
from rabench.attention.common import apply_query_affine, upcast
from rabench.attention.definitions import standard_definition
from rabench.attention.gates import GATE_INIT, per_head
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec


@register("std-gated", "standard attention x RA's learned w_std gate only (learned-temperature control)", family="standard")
class StdGatedAttention(AttentionCore):
    folds_query = True

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.gate_logits = nn.Parameter(torch.empty(spec.n_head, 3))  # (H, 3) as RA
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """RA's gate init; nothing random to draw."""
        self.gate_logits.copy_(torch.tensor(GATE_INIT, dtype=self.gate_logits.dtype).repeat(self.spec.n_head, 1))

    def w_std(self) -> Tensor:
        return torch.softmax(upcast(self.gate_logits), dim=-1)[:, 0]

    def query_affine(self) -> tuple[Tensor, None]:
        """(w_std per head (H,), no shift): L_ij = w_std c q_i.k_j is SDPA on queries scaled by it."""
        return self.w_std(), None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The math after the query scale: SDPA's fused causal kernel."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        return self.attend(apply_query_affine(q, *self.query_affine()), k, v, x)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """L_ij = w_std c q_i.k_j under the causal mask, open-coded (rabench check's float64 oracle)."""
        return standard_definition(q * per_head(self.w_std()).to(q.dtype), k, v, self.scale)

    def gate_parameters(self) -> list[nn.Parameter]:
        """RA's gate logits, of which this control uses w_std: the same learning rate as RA's."""
        return [self.gate_logits]

    def gate_means(self) -> dict[str, float]:
        w = torch.softmax(self.gate_logits.float(), dim=-1).mean(0)
        return {"w_std": w[0].item(), "w_rec": 0.0, "w_disc": 0.0}
