"""The interface every attention module implements.

An attention core maps per-head q, k, v of shape (B, H, T, D) to outputs of the same
shape, causally. It receives the block input x (B, T, C) too, for variants whose gates
read the hidden states. It owns whatever parameters it learns (gates, scorers).

Paired starts: the model draws every parameter the attentions share (embeddings, MLPs,
projections) from the run's seed, and each core's own parameters from a separate
generator derived from (seed, layer) through `reset_parameters(generator)`. So whatever a
core learns never shifts the shared stream, and two attentions with the same seed start
from the same shared weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabench.attention.registry import AttentionSpec


class AttentionCore(nn.Module):
    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.scale = spec.head_dim**-0.5

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re)draw this core's own parameters from `generator` (None: the global generator).

        The default initialises RA's gates (`self.gates`, when there are any); a variant
        with more parameters overrides this, calls super(), then draws its own, always from
        `generator` and in a fixed order.
        """
        gates = getattr(self, "gates", None)
        if gates is not None:
            gates.reset_parameters(generator)

    def gate_means(self) -> dict[str, float] | None:
        """Head-averaged RA gate values (w_std, w_rec, w_disc) for the log; None if it has none.

        RA-family modules keep their RAGates in `self.gates`; that is all this needs.
        """
        gates = getattr(self, "gates", None)
        return gates.mean_weights() if gates is not None else None

    def set_progress(self, progress: float) -> None:
        """Fraction of the run's budget spent, in [0, 1]; schedules (annealing) read it."""

    def set_step(self, step: int) -> None:
        """Index of the optimizer step about to run (0-based), set before its forwards; step
        schedules (ra-amortized's refreshes) read it, as plain Python state the compiler guards on."""

    def warm_up_steps(self) -> tuple[int, ...]:
        """Step indices whose forwards together take every path this module takes in training:
        warm-up runs each, so that compiling and CUDA-graph recording all happen before timing."""
        return (0,)

    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters `--gate-lr-mult` scales the learning rate of: RA's gate logits and
        discoverability vector (`self.gates`, when there are any). A core whose gate lives
        elsewhere (std-gated) overrides this."""
        gates = getattr(self, "gates", None)
        return list(gates.parameters()) if gates is not None else []
