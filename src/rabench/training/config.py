"""Everything a training run needs, resolved before it starts and saved as config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Learning rates each preset trains with by default: GPT-2 small practice for the real
# models, higher for the toy ones. The same for every attention, never tuned per config.
PRESET_LR = {"gpt2-124m": 6e-4, "gpt2-350m": 3e-4, "small": 1e-3, "tiny": 3e-3}


@dataclass
class TrainConfig:
    attn: str
    data: str
    out: str
    preset: str = "gpt2-124m"
    attn_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    time_budget_s: float | None = None
    max_iters: int | None = None
    until_plateau: bool = False
    plateau_patience: int = 5
    plateau_min_delta: float = 0.01
    cooldown_iters: int = 200
    batch_size: int | None = None  # None: the preset's default
    seq_len: int | None = None
    grad_accum: int = 1
    lr: float | None = None  # None: PRESET_LR
    min_lr_ratio: float = 0.1
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    ckpt_every_s: float = 300.0
    compile: bool = False
    device: str = "auto"
    resume: bool = False
    progress_bar: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
