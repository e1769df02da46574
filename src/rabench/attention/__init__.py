"""Attention variants, all behind one resolver (`rabench.attention.registry`).

Importing this package registers every built-in variant; each lives in its own module.
Plug-ins (an entry point, `pkg.mod:Class` or `path/file.py:Class`) resolve through the same
`entry()`; `rabench.attention.base` documents the contract they implement.
"""

from rabench.attention import (  # noqa: F401  (importing a module registers its variant)
    open,
    ra_adaptive,
    ra_amortized,
    ra_anneal,
    ra_budget,
    ra_folded,
    ra_gated,
    ra_layers,
    ra_local,
    ra_lowrank,
    ra_norec,
    ra_open,
    ra_sparse,
    ra_triton,
    sdpa,
    std_gated,
)
from rabench.attention.base import AttentionCore
from rabench.attention.common import causal_mask, init_linear, masked_softmax_apply, upcast
from rabench.attention.registry import build, entry, folder_name, names, parse_option_strings, resolve_options
from rabench.attention.spec import AttentionSpec

__all__ = ["AttentionCore", "AttentionSpec", "build", "causal_mask", "entry", "folder_name", "init_linear",
           "masked_softmax_apply", "names", "parse_option_strings", "resolve_options", "upcast"]
