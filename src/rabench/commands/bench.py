"""`rabench bench`: the attention and training-step speed tables."""

from __future__ import annotations

import argparse
import sys

HELP = "attention and training-step speed table (ratios to sdpa from the same run)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", help="comma-separated attention names (default: sdpa,open,std-gated,ra-open,"
                                  "ra-folded,ra-triton + every RA variant)")
    p.add_argument("--shape", default="8,12,1024,64",
                   help="B,H,T,D: heads and head dim of the attention rows; B*T is the token count every row keeps")
    p.add_argument("--seq-lens", help="comma-separated T for the attention rows (default: the shape's T), "
                                      "e.g. 1024,2048,4096; B = B*T of --shape / T")
    p.add_argument("--step-seq-lens", help="comma-separated T for the step rows (default: --seq-lens)")
    p.add_argument("--preset", default="gpt2-124m", help="model preset for the training-step rows")
    p.add_argument("--no-steps", action="store_true", help="attention rows only")
    p.add_argument("--no-attention", action="store_true",
                   help="step rows only (split a long table across device calls)")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="both",
                   help="training steps eager, compiled, or both")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode of the compiled step rows")
    p.add_argument("--compile-optimizer", action="store_true",
                   help="also compile gradient clipping + AdamW in the compiled step rows")
    p.add_argument("--out", default="bench.json", help="JSON output (a .txt and a .md table beside it)")
    p.add_argument("--device", default="auto")


def run(a: argparse.Namespace) -> None:
    from rabench.bench import run_bench

    a.argv = sys.argv[1:]
    run_bench(a)
