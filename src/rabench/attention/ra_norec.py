"""The full control for reciprocity: RA with the reciprocal term removed.

    L_ij = w_std S_ij + w_disc d_j          (j <= i),   (w_std, w_rec, w_disc) = softmax(g)

Everything else is RA's: the same RAGates (three logits per head, initialised to
(2.2, 0.6, 0.1)), the same discoverability vector u and bias w_disc d_j, the same fused
kernel path, called with its reciprocal operands absent (q2 = k2 = None), with backend="auto"
(or "triton", "torch"). The default, backend="folded", computes the same logits through SDPA
at head dim D: since d_j = k_j . u,

    w_std S_ij + w_disc d_j = c (w_std q_i + (w_disc / c) u) . k_j

so the whole control is an affine map of q followed by standard causal attention. The core
declares it (`folds_query`, `query_affine`), and inside the model the block folds it into the
query rows of its projection (weights times w_std, bias times w_std plus (w_disc / c) u): the
step is sdpa's, plus operations on the (3C, C) weight. Exact in real arithmetic; in bf16 the
bias rounds with q, as sdpa's own q does. RA vs ra-norec therefore differs in the w_rec S_ji
term alone; ra-norec vs std-gated in the w_disc d_j term alone.

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
from rabench.attention.common import apply_query_affine
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import BACKENDS as KERNEL_BACKENDS, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError

BACKENDS = (*KERNEL_BACKENDS, "folded")  # run_ra's routes, or the query map and SDPA


@register("ra-norec", "RA with w_rec held at 0: w_std*S + w_disc*d as SDPA on an affine map of q (backend=folded), "
          "or through the RA kernel (backend=auto) (control for reciprocity)",
          family="standard", backend="folded")
class RANoRecAttention(AttentionCore):
    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        self.backend = spec.options["backend"]
        if self.backend not in BACKENDS:
            raise RabenchError(f"ra-norec: backend {self.backend!r} is unknown; choose {', '.join(BACKENDS)}")
        self.folds_query = self.backend == "folded"
        self.gates = RAGates(spec.n_head, spec.head_dim)

    def query_affine(self) -> tuple[Tensor, Tensor]:
        """(w_std (H,), (w_disc / c) u (H, D)): q -> w_std q + (w_disc / c) u, then SDPA (backend=folded)."""
        return self.gates.query_affine(self.scale)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The math after the query map: SDPA's fused causal kernel at head dim D, scale c."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        if self.folds_query:
            return self.attend(apply_query_affine(q, *self.query_affine()), k, v, x)
        # w_std c q_i . k_j = w_std S_ij (scale applied in the kernel) + w_disc d_j; no reciprocal operands
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, reciprocal=False)

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """RA's definition with the reciprocal term's weight 0, L_ij = w_std S_ij + w_disc d_j,
        open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, rec_mult=0.0)

    def gate_means(self) -> dict[str, float]:
        means = self.gates.mean_weights()
        means["w_rec"] = 0.0  # the softmax's middle share multiplies nothing
        return means
