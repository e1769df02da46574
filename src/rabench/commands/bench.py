"""`rabench bench`: the attention and training-step speed tables."""

from __future__ import annotations

import argparse

HELP = "attention and training-step speed table (ratios to sdpa from the same run)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", help="comma-separated attention names (default: sdpa,open,ra-open,ra-triton,ra-folded + variants)")
    p.add_argument("--shape", default="8,12,1024,64", help="B,H,T,D for the attention rows")
    p.add_argument("--preset", default="gpt2-124m", help="model preset for the training-step rows")
    p.add_argument("--no-steps", action="store_true", help="attention rows only")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="both", help="training steps compiled, not, or both")
    p.add_argument("--out", default="bench.json", help="JSON output")
    p.add_argument("--device", default="auto")


def run(a: argparse.Namespace) -> None:
    from rabench.bench import run_bench

    run_bench(a)
