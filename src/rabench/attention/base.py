"""The interface every attention module implements.

An attention core maps per-head q, k, v of shape (B, H, T, D) to outputs of the same
shape, causally. It receives the block input x (B, T, C) too, for variants whose gates
read the hidden states. It owns whatever parameters it learns (gates, scorers).
"""

from __future__ import annotations

from torch import Tensor, nn

from rabench.attention.registry import AttentionSpec


class AttentionCore(nn.Module):
    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.scale = spec.head_dim**-0.5

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def gate_means(self) -> dict[str, float] | None:
        """Head-averaged RA gate values (w_std, w_rec, w_disc) for the log; None if it has none.

        RA-family modules keep their RAGates in `self.gates`; that is all this needs.
        """
        gates = getattr(self, "gates", None)
        return gates.mean_weights() if gates is not None else None

    def set_progress(self, progress: float) -> None:
        """Fraction of the run's budget spent, in [0, 1]; schedules (annealing) read it."""
