"""The full control for reciprocity: RA with the reciprocal term removed.

    L_ij = w_std S_ij + w_disc d_j          (j <= i),   (w_std, w_rec, w_disc) = softmax(g)

Everything else is RA's: the same RAGates (three logits per head, initialised to
(2.2, 0.6, 0.1)), the same discoverability vector u and bias w_disc d_j, the same fused
kernel path, called with its reciprocal operands absent (q2 = k2 = None). backend="folded"
computes the same logits through SDPA instead, on a query/key head dim of D+1 (padded to
D+8): [w_std q, w_disc/c] . [k, d_j] (the folded identity of ra-math.md without its
reciprocal block). It is exact too, and may be the cheaper route for the bias-only model. RA vs ra-norec
therefore differs in the w_rec S_ji term alone; ra-norec vs std-gated in the w_disc d_j
term alone.

How w_rec is held at 0: the coefficient of S_ji is exactly 0 (the term is not computed),
while w_std and w_disc keep RA's three-way softmax. Renormalising over (g_std, g_disc)
alone would look tidier but would change the control: it starts w_std at 0.891 instead
of RA's 0.755 (a hotter softmax from the first step, so RA vs control would also differ
in temperature), and it ties w_std + w_disc = 1, taking away the learned temperature RA
and std-gated have. With the three-way softmax the control starts with RA's exact w_std
and w_disc, and its temperature learns as std-gated's does. The gate log reports
w_rec = 0, the weight the reciprocal term actually gets.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.kernel_route import BACKENDS as KERNEL_BACKENDS, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.ra_folded import fold_ra
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError

BACKENDS = (*KERNEL_BACKENDS, "folded")  # run_ra's routes, or SDPA on the folded operands


@register("ra-norec", "RA with w_rec held at 0: w_std*S + w_disc*d through the RA kernel, or SDPA at D+1 with "
          "backend=folded (control for reciprocity)",
          family="standard", backend="auto")
class RANoRecAttention(AttentionCore):
    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.backend = spec.options["backend"]
        if self.backend not in BACKENDS:
            raise RabenchError(f"ra-norec: backend {self.backend!r} is unknown; choose {', '.join(BACKENDS)}")
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        if self.backend == "folded":  # c [w_std q, w_disc/c] . [k, d] = w_std S + w_disc d, through SDPA
            q_fold, k_fold = fold_ra(q, k, self.gates, self.scale, reciprocal=False)
            return F.scaled_dot_product_attention(q_fold, k_fold, v, is_causal=True, scale=self.scale)
        # w_std c q_i . k_j = w_std S_ij (scale applied in the kernel) + w_disc d_j; no reciprocal operands
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, reciprocal=False)

    def gate_means(self) -> dict[str, float]:
        means = self.gates.mean_weights()
        means["w_rec"] = 0.0  # the softmax's middle share multiplies nothing
        return means
