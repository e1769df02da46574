"""When has val_loss stopped improving? The stopping rule of the plan's full test.

The rule, fixed before any run (notes/plateau-rule.md argues each choice):

- It reads the evaluation curve only: val_loss on the fixed val set, every `eval_every`
  iterations (the same sequences every time, so consecutive evaluations differ by what the
  model learned, not by which text was drawn).
- **Plateau** at evaluation i when the last `patience` evaluations (the window:
  patience x eval_every iterations) did not beat the best evaluation before them by more
  than `min_delta` nats: min(v[i-patience+1..i]) >= min(v[0..i-patience]) - min_delta.
  A non-finite evaluation never counts as an improvement. The rule is a function of the
  curve alone, so a resumed run (which replays its stored evaluations) and the report
  (which replays metrics.jsonl) find the same point as the run did.
- A curve that keeps falling by more than min_delta per window never plateaus (the run
  stops at its cap instead, and is then not judged as a plateau run); a curve that turns
  up (over-fitting) plateaus at most `patience` evaluations after its minimum; noise
  smaller than min_delta around a flat trend cannot keep a run going.
- **Then the cooldown**: from the next step the learning rate falls linearly from lr to
  min_lr over the cooldown (`cooldown_iters`, else `cooldown_frac` of the iterations done at
  the plateau; training.schedule), and the run stops at the cooldown's end with a final
  evaluation. The reported loss is that LAST evaluation, never the best one: the best is
  chosen on the very val set that judges it, a minimum over more evaluations is lower by
  chance alone, and the model the procedure delivers is the cooled-down one.
"""

from __future__ import annotations

import math


class PlateauRule:
    """Plateaued = the last `patience` evaluations did not improve on the best evaluation
    before them by more than `min_delta` (see the module docstring for the whole rule).

    `update` takes one evaluation and returns True from the first evaluation at which the
    rule holds, and on every call after that (the trainer starts its cooldown at the first).
    A flat curve plateaus on evaluation patience + 1; small improvements that add up to more
    than min_delta within the window still count, because they are measured from the best.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.01) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        if min_delta < 0:
            raise ValueError("min_delta must be >= 0")
        self.patience = patience
        self.min_delta = min_delta
        self.history: list[float] = []
        self.plateaued = False

    @property
    def best(self) -> float:
        """The lowest finite evaluation so far (inf before the first)."""
        return min((v for v in self.history if math.isfinite(v)), default=math.inf)

    def window_improved(self) -> bool:
        """Did the last `patience` evaluations beat the best before them by more than min_delta?
        True while fewer than patience + 1 evaluations exist (nothing to compare yet)."""
        if len(self.history) <= self.patience:
            return True
        before = [v for v in self.history[:-self.patience] if math.isfinite(v)]
        window = [v for v in self.history[-self.patience:] if math.isfinite(v)]
        if not before:
            return True  # no finite reference yet: nothing has been measured to plateau from
        return bool(window) and min(window) < min(before) - self.min_delta

    def update(self, val_loss: float) -> bool:
        """Record one evaluation; True once the curve has plateaued."""
        self.history.append(float(val_loss))
        if not self.plateaued:
            self.plateaued = not self.window_improved()
        return self.plateaued

    def __repr__(self) -> str:
        return (f"PlateauRule(patience={self.patience}, min_delta={self.min_delta}, best={self.best:.4f}, "
                f"evaluations={len(self.history)}, plateaued={self.plateaued})")


def plateau_index(val_losses: list[float], patience: int = 5, min_delta: float = 0.01) -> int | None:
    """Index of the evaluation at which the rule first says plateau, or None."""
    rule = PlateauRule(patience, min_delta)
    for i, loss in enumerate(val_losses):
        if rule.update(loss):
            return i
    return None


def cooldown_length(plateau_iter: int, cooldown_iters: int | None, cooldown_frac: float) -> int:
    """Iterations of the cooldown that starts after iteration `plateau_iter`: `cooldown_iters`
    when given, else `cooldown_frac` of the iterations done so far (at least one), so every run
    cools down for the same share of its own length."""
    if cooldown_iters is not None:
        return cooldown_iters
    return max(1, round(cooldown_frac * plateau_iter))
