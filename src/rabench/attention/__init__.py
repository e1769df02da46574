"""Attention variants, all behind one registry (`rabench.attention.registry`).

Importing this package registers every variant; each lives in its own module.
"""

from rabench.attention import open, ra_folded, ra_open, ra_triton, sdpa, std_gated  # noqa: F401  (registers)
from rabench.attention.base import AttentionCore
from rabench.attention.registry import AttentionSpec, build, entry, names, parse_option_strings, resolve_options

__all__ = ["AttentionCore", "AttentionSpec", "build", "entry", "names", "parse_option_strings", "resolve_options"]
