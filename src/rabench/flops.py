"""FLOPs per training step, and the cost floor they set.

Why: a measured step-time ratio s mixes the math's cost with the implementation's efficiency.
The floor separates them: `floor_ratio` is the step-time ratio an implementation exactly as
efficient per FLOP as the baseline's would reach. When the break-even slowdown s* is below it,
no implementation of that math can make it pay at that scale.

Why not `torch.utils.flop_counter`: it counts matmuls only and ignores causality, so sdpa,
open and ra-open count alike and RA would sit at a floor of ~1.0x. Each attention core instead
declares its own count (`AttentionCore.attention_flops`); the rest of the model is counted by
formula, once, the same for every attention.

Counting convention (one FLOP = one multiply or one add; a multiply-add is 2):

- Attention: each core's own declaration, by default in tile products per causal pair
  (`rabench.attention.pair_flops`, where the convention is spelled out): standard causal
  attention 7 D (T + 1) per token and head, forward + backward; RA 11 D (T + 1), 11/7 of it.
- The rest of the model: 6 FLOPs per matmul weight per token (2 forward, 4 backward):
  12 n_embd^2 per block (c_attn 3, c_proj 1, MLP 8) and n_embd * vocab for the LM head (the tied
  token embedding, a lookup on the way in, is counted once, as the head). Biases, LayerNorms,
  GELU, the loss and the optimizer are left out (under 1% at gpt2-124m).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rabench.attention.pair_flops import causal_pair_flops  # noqa: F401  (plug-ins count with rabench.flops')
from rabench.attention.registry import entry, resolve_options
from rabench.attention.spec import AttentionSpec
from rabench.errors import RabenchError
from rabench.experiment import BASELINE

if TYPE_CHECKING:
    from rabench.model.config import ModelConfig

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets, matched by
# a substring of torch.cuda.get_device_name. Order matters: the more specific name first.
BF16_PEAKS: tuple[tuple[str, str, float], ...] = (
    ("H100 PCIe", "H100 PCIe, 756 TFLOP/s dense bf16", 756e12),
    ("H100 NVL", "H100 NVL, 835 TFLOP/s dense bf16", 835e12),
    ("H100", "H100 SXM, 989 TFLOP/s dense bf16", 989e12),
    ("H200", "H200, 989 TFLOP/s dense bf16", 989e12),
    ("A100", "A100, 312 TFLOP/s dense bf16", 312e12),
)


def dense_flops_per_token(cfg: ModelConfig) -> float:
    """Everything but the attention cores, forward + backward: 6 (12 L C^2 + C V)."""
    c = cfg.n_embd
    return 6.0 * (12 * cfg.n_layer * c * c + c * cfg.vocab_size)


def attention_flops_per_token(attn: str, cfg: ModelConfig, seq_len: int,
                              options: dict[str, Any] | None = None) -> float:
    """The attention cores of all layers, forward + backward, per token, from each core's declaration."""
    cls = entry(attn).cls
    resolved = resolve_options(attn, options)
    total = 0.0
    for i in range(cfg.n_layer):
        spec = AttentionSpec(cfg.n_head, cfg.head_dim, cfg.n_embd, i, cfg.n_layer, resolved)
        flops = cls.attention_flops(spec, seq_len)  # every core is an AttentionCore: its default is standard's
        if not isinstance(flops, (int, float)) or not math.isfinite(flops) or flops < 0:
            raise RabenchError(f"attention {attn!r}: attention_flops returned {flops!r} for layer {i}; "
                               "it must be a finite number of FLOPs >= 0")
        total += flops
    return total


def step_flops_per_token(attn: str, cfg: ModelConfig, seq_len: int, options: dict[str, Any] | None = None) -> float:
    """Model FLOPs per token of one training step (forward + backward)."""
    return dense_flops_per_token(cfg) + attention_flops_per_token(attn, cfg, seq_len, options)


def floor_ratio(attn: str, cfg: ModelConfig, seq_len: int, options: dict[str, Any] | None = None,
                baseline: str = BASELINE) -> float:
    """Step FLOPs of `attn` over the baseline's: the step-time ratio at the baseline's efficiency."""
    return step_flops_per_token(attn, cfg, seq_len, options) / step_flops_per_token(baseline, cfg, seq_len)


def card_peak(device_name: str | None) -> tuple[str, float] | None:
    """(what the peak is, FLOP/s) for a known card, None for an unknown one or a CPU (None)."""
    if not device_name:
        return None
    for key, label, peak in BF16_PEAKS:
        if key.lower() in device_name.lower():
            return label, peak
    return None
