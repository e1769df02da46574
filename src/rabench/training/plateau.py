"""When has val_loss stopped improving? The stopping rule for the plan's full test."""

from __future__ import annotations

import math


class PlateauRule:
    """Plateaued = no improvement of the best val_loss by more than `min_delta` over the
    last `patience` evaluations.

    The first evaluation sets the best. An evaluation counts as an improvement only if
    val_loss < best - min_delta; it then becomes the new best and the count restarts.
    Every other evaluation (including a NaN) adds one to the count, and `update` returns
    True on the `patience`-th such evaluation in a row, and on every call after that.
    So a flat curve plateaus on evaluation patience + 1, and small improvements that add
    up to more than min_delta still count, because they are measured from the best.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.01) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        if min_delta < 0:
            raise ValueError("min_delta must be >= 0")
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.evals_without_improvement = 0
        self.plateaued = False

    def update(self, val_loss: float) -> bool:
        """Record one evaluation; True once the curve has plateaued."""
        if self.plateaued:
            return True
        if math.isinf(self.best) and math.isfinite(val_loss):
            self.best = val_loss
        elif math.isfinite(val_loss) and val_loss < self.best - self.min_delta:
            self.best = val_loss
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        self.plateaued = self.evals_without_improvement >= self.patience
        return self.plateaued

    def __repr__(self) -> str:
        return (
            f"PlateauRule(patience={self.patience}, min_delta={self.min_delta}, best={self.best:.4f}, "
            f"evals_without_improvement={self.evals_without_improvement})"
        )


def plateau_index(val_losses: list[float], patience: int = 5, min_delta: float = 0.01) -> int | None:
    """Index of the evaluation at which the rule first says plateau, or None."""
    rule = PlateauRule(patience, min_delta)
    for i, loss in enumerate(val_losses):
        if rule.update(loss):
            return i
    return None
