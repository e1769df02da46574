"""Learning rate that fits a time budget.

Linear warmup over `warmup_iters`, then a cosine from lr to min_lr keyed to `progress`,
the fraction of the budget spent (train time / time budget, or iter / max iters). A
time-capped run therefore anneals fully by its end, whatever its speed; a cosine keyed
to an iteration count the run never reaches (a flaw of earlier harnesses) does not.

For the full test (`--until-plateau`) the rate stays at lr after warmup until the
plateau rule fires, then falls linearly to min_lr over `cooldown_iters`.
"""

from __future__ import annotations

import math


def warmup_factor(it: int, warmup_iters: int) -> float:
    return min(1.0, (it + 1) / warmup_iters) if warmup_iters > 0 else 1.0


def budget_lr(it: int, progress: float, lr: float, min_lr: float, warmup_iters: int) -> float:
    """Warmup, then cosine decay over the fraction of the budget spent."""
    if it < warmup_iters:
        return lr * warmup_factor(it, warmup_iters)
    p = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))


def plateau_lr(it: int, lr: float, min_lr: float, warmup_iters: int, cooldown_start: int | None, cooldown_iters: int) -> float:
    """Warmup, constant, then after the plateau a linear cooldown to min_lr."""
    if it < warmup_iters:
        return lr * warmup_factor(it, warmup_iters)
    if cooldown_start is None:
        return lr
    frac = min(1.0, (it - cooldown_start + 1) / max(1, cooldown_iters))  # the last cooldown step runs at min_lr
    return lr + (min_lr - lr) * frac
