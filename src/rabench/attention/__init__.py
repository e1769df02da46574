"""Attention variants, all behind one registry (`rabench.attention.registry`).

Importing this package registers every variant; each lives in its own module.
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
from rabench.attention.registry import AttentionSpec, build, entry, names, parse_option_strings, resolve_options

__all__ = ["AttentionCore", "AttentionSpec", "build", "entry", "names", "parse_option_strings", "resolve_options"]
