"""What one attention core's math costs: FLOPs per token, counted in tile products per causal pair.

Why a module of its own: the cores declare their cost with these formulas
(`AttentionCore.attention_flops`), and `rabench.flops` counts a whole step from the cores'
declarations; both import this module, which imports nothing of rabench.

Counting convention (one FLOP = one multiply or one add; a multiply-add is 2), as a flash-style
kernel does the work (notes/ra-math.md, "Work"): per causal (query i, key j <= i) pair, each
"tile product" of notes/ra-math.md is one length-D dot product, 2 D FLOPs. A query at position i
has i + 1 keys, so over a sequence of T tokens the mean is (T + 1) / 2 pairs per token. Standard
attention does 7 products per pair (forward: QK^T, PV; backward: QK^T recomputed, dV, dP, dQ, dK),
so per token and head
    7 * 2 D * (T + 1) / 2 = 7 D (T + 1)          (forward alone: 2 D (T + 1)).
RA does 11 per pair (forward 3, backward 8): 11 D (T + 1), 11/7 of it. Softmax, masks, gates
and the discoverability bias are O(T) or O(D) per token and are left out.
"""

from __future__ import annotations

STANDARD_PRODUCTS = 7  # tile products per causal pair, forward + backward (notes/ra-math.md)
RA_PRODUCTS = 11


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
