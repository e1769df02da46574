"""RA's learned parameters, shared by every RA-family module.

Per layer and head: three gate logits g = (g_std, g_rec, g_disc), w = softmax(g),
initialised to (2.2, 0.6, 0.1) so w ~ (0.755, 0.152, 0.092) (ra-math.md); and the
discoverability vector u (init N(0, 0.02^2)) that makes d_j = k_j . u a column bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rabench.attention.common import upcast

GATE_INIT = (2.2, 0.6, 0.1)
U_INIT_STD = 0.02


class RAGates(nn.Module):
    def __init__(self, n_head: int, head_dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.empty(n_head, 3))  # (H, 3)
        self.u = nn.Parameter(torch.empty(n_head, head_dim))  # (H, D)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """logits = GATE_INIT per head; u ~ N(0, 0.02^2) drawn from `generator` (None: the global one)."""
        self.logits.copy_(torch.tensor(GATE_INIT, dtype=self.logits.dtype).repeat(self.logits.shape[0], 1))
        nn.init.normal_(self.u, mean=0.0, std=U_INIT_STD, generator=generator)

    def weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(w_std, w_rec, w_disc), each (H,), float32 (float64 for a float64 model)."""
        w = torch.softmax(upcast(self.logits), dim=-1)
        return w[:, 0], w[:, 1], w[:, 2]

    def discoverability(self, k: Tensor) -> Tensor:
        """d_j = k_j . u per head: (B, H, T), float32 or better."""
        return key_dot(k, self.u)

    def bias_vector(self, w_disc: Tensor) -> Tensor:
        """w_disc u per head, (H, D), from this step's w_disc (weights()[2]): the column bias
        w_disc d_j = k_j . (w_disc u) in the form the fused kernel takes (it computes the
        products from its key tiles)."""
        return upcast(self.u) * w_disc.view(-1, 1)

    def query_affine(self, scale: float, weights: tuple[Tensor, Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, Tensor]:
        """(w_std (H,), (w_disc / c) u (H, D)): since d_j = k_j . u, the standard term and the
        column bias are one product, w_std S_ij + w_disc d_j = c (w_std q_i + (w_disc / c) u) . k_j,
        so both ride on q as an affine map at head dim D (c = `scale`). `weights`: this step's
        weights() where the caller has them already (one softmax a step, not two)."""
        w_std, _, w_disc = weights if weights is not None else self.weights()
        return w_std, upcast(self.u) * (w_disc / scale).view(-1, 1)

    def mean_weights(self) -> dict[str, float]:
        """Head-averaged gate values, for the metrics log."""
        w_std, w_rec, w_disc = self.weights()
        return {"w_std": w_std.mean().item(), "w_rec": w_rec.mean().item(), "w_disc": w_disc.mean().item()}


def key_dot(k: Tensor, u: Tensor) -> Tensor:
    """k_j . u[h] per head: (B, H, T) from k (B, H, T, D) and u (H, D), float32 or better.

    A broadcast product summed over d, not an einsum: the einsum runs as batched
    matrix-vector products on an upcast copy of k (three per layer with the backward's),
    while the compiler fuses this form into reductions that read k in place."""
    k = upcast(k)
    return (k * u.to(k.dtype).unsqueeze(1)).sum(-1)


def per_head(w: Tensor) -> Tensor:
    """Shape (H,) -> (1, H, 1, 1) so it broadcasts over (B, H, T, D) or (B, H, T, T)."""
    return w.view(1, -1, 1, 1)
