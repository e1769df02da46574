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

- Attention, per head, as a flash-style kernel does it (notes/ra-math.md, "Work"): per causal
  (query i, key j <= i) pair, each "tile product" of notes/ra-math.md is one length-D dot
  product, 2 D FLOPs. A query at position i has i + 1 keys, so over a sequence of T tokens the
  mean is (T + 1) / 2 pairs per token. Standard attention does 7 products per pair (forward:
  QK^T, PV; backward: QK^T recomputed, dV, dP, dQ, dK), so per token and head
      7 * 2 D * (T + 1) / 2 = 7 D (T + 1)          (forward alone: 2 D (T + 1)).
  RA does 11 per pair (forward 3, backward 8): 11 D (T + 1), 11/7 of it. Softmax, masks, gates
  and the discoverability bias are O(T) or O(D) per token and are left out.
- The rest of the model: 6 FLOPs per matmul weight per token (2 forward, 4 backward):
  12 n_embd^2 per block (c_attn 3, c_proj 1, MLP 8) and n_embd * vocab for the LM head (the tied
  token embedding, a lookup on the way in, is counted once, as the head). Biases, LayerNorms,
  GELU, the loss and the optimizer are left out (under 1% at gpt2-124m).

This module imports nothing heavy at load time: base.py uses its formula.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rabench.errors import RabenchError
from rabench.experiment import BASELINE

if TYPE_CHECKING:
    from rabench.model.config import ModelConfig

STANDARD_PRODUCTS = 7  # tile products per causal pair, forward + backward (notes/ra-math.md)
RA_PRODUCTS = 11

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets, matched by
# a substring of torch.cuda.get_device_name. Order matters: the more specific name first.
BF16_PEAKS: tuple[tuple[str, str, float], ...] = (
    ("H100 PCIe", "H100 PCIe, 756 TFLOP/s dense bf16", 756e12),
    ("H100 NVL", "H100 NVL, 835 TFLOP/s dense bf16", 835e12),
    ("H100", "H100 SXM, 989 TFLOP/s dense bf16", 989e12),
    ("H200", "H200, 989 TFLOP/s dense bf16", 989e12),
    ("A100", "A100, 312 TFLOP/s dense bf16", 312e12),
)


def causal_pair_flops(products: float, seq_len: int, head_dim: int, n_head: int) -> float:
    """FLOPs per token of `products` length-`head_dim` dot products per causal pair, all heads."""
    return products * 2 * head_dim * n_head * (seq_len + 1) / 2


def standard_attention_flops(seq_len: int, head_dim: int, n_head: int) -> float:
    """Standard causal attention, forward + backward, per token and layer: 7 n_head D (T + 1)."""
    return causal_pair_flops(STANDARD_PRODUCTS, seq_len, head_dim, n_head)


def ra_attention_flops(seq_len: int, head_dim: int, n_head: int) -> float:
    """Canonical RA, forward + backward, per token and layer: 11 n_head D (T + 1), 11/7 of standard."""
    return causal_pair_flops(RA_PRODUCTS, seq_len, head_dim, n_head)


def banded_reciprocal_flops(seq_len: int, head_dim: int, n_head: int, window: int) -> float:
    """RA whose reciprocal term spans only the last `window` keys (ra-local), per token and layer.

    The reciprocal term adds 11 - 7 = 4 products per pair it covers (forward: its score; backward:
    its score again, dQ and dK in the reciprocal role). Query i covers min(i + 1, W) keys, so the
    mean over T queries is (W (W + 1) / 2 + (T - W) W) / T for W < T, else (T + 1) / 2. Exact pairs:
    a kernel that skips whole tiles outside the band does a little more.
    """
    w = min(window, seq_len)
    band_pairs = (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len
    extra = (RA_PRODUCTS - STANDARD_PRODUCTS) * 2 * head_dim * n_head * band_pairs
    return standard_attention_flops(seq_len, head_dim, n_head) + extra


def low_rank_reciprocal_flops(seq_len: int, head_dim: int, n_head: int, rank: int) -> float:
    """RA with a rank-r reciprocal term (ra-lowrank), per token and layer: the reciprocal term's 4
    products per pair have length r instead of D, plus the two (D x r) projections k W2 and q W1
    per head, 2 * 2 D r FLOPs forward, 3x that forward + backward."""
    reciprocal = causal_pair_flops(RA_PRODUCTS - STANDARD_PRODUCTS, seq_len, rank, n_head)
    projections = 3 * 2 * 2 * head_dim * rank * n_head
    return standard_attention_flops(seq_len, head_dim, n_head) + reciprocal + projections


def dense_flops_per_token(cfg: ModelConfig) -> float:
    """Everything but the attention cores, forward + backward: 6 (12 L C^2 + C V)."""
    c = cfg.n_embd
    return 6.0 * (12 * cfg.n_layer * c * c + c * cfg.vocab_size)


def attention_flops_per_token(attn: str, cfg: ModelConfig, seq_len: int,
                              options: dict[str, Any] | None = None) -> float:
    """The attention cores of all layers, forward + backward, per token, from each core's declaration."""
    from rabench.attention.registry import AttentionSpec, entry, resolve_options

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
