"""Learning rate: linear warm-up, then a cosine to min_lr, keyed to the run's OWN length.

An --iters run measures its position in iterations, a --time run in training seconds, so
every run anneals fully by its own end whatever its speed (a cosine keyed to an iteration
count a time-capped run never reaches was a flaw of earlier harnesses). Warm-up is a
fraction of the same budget (`warmup_frac`), or an explicit number of iterations
(`warmup_iters`).

The position of a step is where it ENDS: iteration it + 1, or the train time before it
plus one step's time. The trainer logs exactly the rate it applied.

For the full test (`--until-plateau`) the rate stays at lr after warm-up until the
plateau rule fires (training.plateau), then falls linearly to min_lr over the cooldown:
`cooldown_iters`, else `cooldown_frac` of the iterations done at the plateau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rabench.training.plateau import cooldown_length


def cosine(p: float, lr: float, min_lr: float) -> float:
    p = min(max(p, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))


@dataclass(frozen=True)
class Schedule:
    """lr at a position along the run; `unit` is 'it' (iterations) or 's' (training seconds)."""

    lr: float
    min_lr: float
    length: float | None  # the run's budget in `unit` (None: plateau run without a cap in that unit)
    unit: str
    warmup: float  # warm-up length, in warmup_unit
    warmup_unit: str
    plateau: bool = False
    cooldown_iters: int | None = None  # None: cooldown_frac of the iterations at the plateau
    cooldown_frac: float = 0.1

    def warmup_factor(self, it: int, pos: float) -> float:
        if self.warmup <= 0:
            return 1.0
        x = it + 1 if self.warmup_unit == "it" else pos
        return min(1.0, max(x, 0.0) / self.warmup)

    def at(self, it: int, pos: float, cooldown_start: int | None = None) -> float:
        """The rate of step `it` (0-based) that ends at `pos` (in `unit`)."""
        factor = self.warmup_factor(it, pos)
        if self.plateau:
            if cooldown_start is None:
                return self.lr * factor
            n = cooldown_length(cooldown_start, self.cooldown_iters, self.cooldown_frac)
            frac = min(1.0, (it - cooldown_start + 1) / n)  # the last cooldown step: min_lr
            return self.lr + (self.min_lr - self.lr) * frac
        if factor < 1.0:
            return self.lr * factor
        assert self.length is not None
        w = self.warmup if self.warmup_unit == self.unit else 0.0
        p = (pos - w) / (self.length - w) if self.length > w else 1.0
        return cosine(p, self.lr, self.min_lr)


def make_schedule(lr: float, min_lr_ratio: float, max_iters: int | None, time_budget_s: float | None,
                  warmup_frac: float, warmup_iters: int | None, until_plateau: bool = False,
                  cooldown_iters: int | None = None, cooldown_frac: float = 0.1) -> Schedule:
    """A --time run is keyed to train time, an --iters run to iterations (time wins when both are given)."""
    unit, length = ("s", time_budget_s) if time_budget_s is not None else ("it", float(max_iters or 0))
    if warmup_iters is not None:
        warmup, warmup_unit = float(warmup_iters), "it"
    else:
        warmup, warmup_unit = warmup_frac * (length or 0.0), unit
    return Schedule(lr=lr, min_lr=lr * min_lr_ratio, length=length, unit=unit, warmup=warmup,
                    warmup_unit=warmup_unit, plateau=until_plateau, cooldown_iters=cooldown_iters,
                    cooldown_frac=cooldown_frac)
