"""AttentionSpec: what a core is told about its place in the model.

Why a module of its own: the contract (base.py), the resolver (registry.py) and the FLOP count
(rabench.flops) all need it, and base.py is imported by the resolver; with the spec here none of
them has to import another late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AttentionSpec:
    """What an attention module needs to know about its place in the model."""

    n_head: int
    head_dim: int
    n_embd: int
    layer_idx: int
    n_layer: int
    options: dict[str, Any] = field(default_factory=dict)
