"""Plan direction 4: progressive reciprocity annealing.

    L_ij = w_std S_ij + a(p) w_rec S_ji + w_disc d_j,      a(p) = max(floor, 1 - p)

p is the fraction of the run's budget spent (`set_progress`, once per step). Full RA at
the start, the reciprocal term fading linearly to `floor` at the end of the budget.
The plan writes max(0.1, 1 - step/total); that is `floor=0.1`. The default is 0.0
because with a floor above 0 the multiplier never reaches 0 and the layer never gets
the fast path; with floor=0 the multiplier only reaches 0 when p = 1, so under this
linear schedule the speed gain is confined to the very end of the budget.

Fast path: once a(p) = 0 the reciprocal term is exactly zero and the kernel runs with
q2 = k2 = None: standard attention at temperature w_std plus the discoverability column
bias, with no second score product (forward or backward).

torch.compile: p stays a Python float on the module and is never read in forward; the
multiplier enters as the value of a 0-dim buffer (updated in place), so a new value
does not retrace. The fast-path switch is a Python bool and flips at most once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import RA_PRODUCTS
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError


@register("ra-anneal", "RA with w_rec x max(floor, 1 - progress); standard fast path once it is 0",
          family="ra", variant=True, floor=0.0, backend="auto")
class RAAnnealAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE
    # Full RA's count: the fast path (standard attention's 7) comes only once the multiplier reaches 0,
    # at the very end of the budget with floor=0 and never with floor > 0.
    pair_products = RA_PRODUCTS

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.floor, self.backend = options["floor"], options["backend"]
        if not 0.0 <= self.floor <= 1.0:
            raise RabenchError(f"ra-anneal: floor must be in [0, 1], got {self.floor}")
        self.gates = RAGates(spec.n_head, spec.head_dim)
        self.progress = 0.0
        self.fast = False  # True once the multiplier is exactly 0
        self.register_buffer("rec_mult", torch.ones(()), persistent=False)

    def multiplier(self) -> float:
        return max(self.floor, 1.0 - self.progress)

    def set_progress(self, progress: float) -> None:
        self.progress = float(progress)
        mult = self.multiplier()
        self.rec_mult.fill_(mult)  # in place: the compiled graph reads the new value
        self.fast = mult == 0.0

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """The definition, open-coded (rabench check's float64 oracle)."""
        return ra_definition(q, k, v, self.gates, self.scale, rec_mult=self.rec_mult)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        if self.fast:  # a(p) = 0: L_ij = w_std S_ij + w_disc d_j, no second score product
            return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, reciprocal=False)
        # scale2 = a(p) w_rec c: the multiplier is a tensor, folded into the reciprocal scale
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend, rec_mult=self.rec_mult)

    def gate_means(self) -> dict[str, float]:
        means = self.gates.mean_weights()
        means["w_rec"] *= self.multiplier()  # the effective reciprocal weight
        return means
