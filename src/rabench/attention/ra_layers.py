"""Plan direction 5: layer-selective reciprocity.

RA (through the fused kernel) in the chosen layers, plain causal SDPA elsewhere:

    chosen layer:   L_ij = w_std S_ij + w_rec S_ji + w_disc d_j      (j <= i), as ra-triton
    other layers:   L_ij = S_ij                                       no gates, no parameters

`layers=()` (the default) means the plan's "middle five of twelve", layers 4..8 (0-based)
of a 12-layer model, scaled to other depths: n = max(1, round(5 L / 12)) layers starting at
ceil((L - n) / 2), i.e. centred and, when the slack is odd, one layer nearer the top as the
plan's 4..8 is. `layers=2,3` picks layers explicitly. Layers without RA report no gates
(gate_means() is None), so the gate log shows which layers carry RA.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from rabench.attention.base import AttentionCore
from rabench.attention.definitions import ra_definition, standard_definition
from rabench.attention.kernel_route import KERNEL_REFERENCE_TOLERANCE, run_canonical_ra
from rabench.attention.gates import RAGates
from rabench.attention.pair_flops import ra_attention_flops, standard_attention_flops
from rabench.attention.registry import register
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError


def default_layers(n_layer: int) -> tuple[int, ...]:
    """The middle round(5 L / 12) layers (at least one): (4, 5, 6, 7, 8) for L = 12."""
    n = min(n_layer, max(1, math.floor(5 * n_layer / 12 + 0.5)))  # round half up
    start = (n_layer - n + 1) // 2
    return tuple(range(start, start + n))


def ra_layers(layers: tuple[int, ...], n_layer: int) -> tuple[int, ...]:
    """The layers that run RA: `layers`, or the default when empty; range-checked."""
    chosen = tuple(layers) or default_layers(n_layer)
    bad = [i for i in chosen if not 0 <= i < n_layer]
    if bad:
        raise RabenchError(f"ra-layers: layers {bad} outside 0..{n_layer - 1} (the model has {n_layer} layers)")
    return tuple(sorted(set(chosen)))


@register("ra-layers", "RA in the chosen layers (default: the middle 5/12), plain SDPA in the rest",
          family="ra", variant=True, layers=(), backend="auto")
class RALayersAttention(AttentionCore):
    reference_tolerance = KERNEL_REFERENCE_TOLERANCE

    @classmethod
    def attention_flops(cls, spec: AttentionSpec, seq_len: int) -> float:
        """RA's 11 products per causal pair in the chosen layers, standard attention's 7 in the rest."""
        ra = spec.layer_idx in ra_layers(spec.options["layers"], spec.n_layer)
        count = ra_attention_flops if ra else standard_attention_flops
        return count(seq_len, spec.head_dim, spec.n_head)

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.backend = options["backend"]
        self.use_ra = spec.layer_idx in ra_layers(options["layers"], spec.n_layer)
        self.gates = RAGates(spec.n_head, spec.head_dim) if self.use_ra else None

    def reference(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """This layer's definition, standard or RA, open-coded (rabench check's float64 oracle)."""
        if not self.use_ra:
            return standard_definition(q, k, v, self.scale)
        return ra_definition(q, k, v, self.gates, self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
        if not self.use_ra:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return run_canonical_ra(q, k, v, self.gates, self.scale, backend=self.backend)
