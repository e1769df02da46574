"""`rabench bench`: the attention and training-step speed tables."""

from __future__ import annotations

import argparse
import sys

HELP = "attention and training-step speed table (ratios to sdpa from the same run)"


# What a bench measures unless told: the GPU question's sizes, or CPU-sized ones that finish in
# minutes (the GPU sizes took minutes a row on a CPU, and say nothing about a GPU anyway).
GPU_DEFAULTS = {"shape": "8,12,1024,64", "preset": "gpt2-124m", "compile": "both"}
CPU_DEFAULTS = {"shape": "2,4,128,32", "preset": "tiny", "compile": "no"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    def default(key: str) -> str:
        return f"(default: {GPU_DEFAULTS[key]} with a GPU, {CPU_DEFAULTS[key]} on a CPU)"

    p.add_argument("--attn", help="comma-separated attention names (default: sdpa,open,std-gated,ra-open,"
                                  "ra-folded,ra-triton + every RA variant)")
    p.add_argument("--shape", help="B,H,T,D: heads and head dim of the attention rows; B*T is the token count every "
                                   f"row keeps {default('shape')}")
    p.add_argument("--seq-lens", help="comma-separated T for the attention rows, e.g. 1024,2048,4096; B = B*T of "
                                      "--shape / T (default: the shape's T)")
    p.add_argument("--step-seq-lens", help="comma-separated T for the step rows (default: --seq-lens)")
    p.add_argument("--preset", help=f"model preset for the training-step rows {default('preset')}")
    p.add_argument("--no-steps", action="store_true", help="attention rows only (default: both kinds)")
    p.add_argument("--no-attention", action="store_true",
                   help="step rows only, to split a long table across device calls (default: both kinds)")
    p.add_argument("--compile", choices=["no", "yes", "both"],
                   help=f"training steps eager, compiled, or both {default('compile')}")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="torch.compile mode of the compiled step rows (default: reduce-overhead)")
    p.add_argument("--compile-optimizer", action="store_true",
                   help="also compile gradient clipping + AdamW in the compiled step rows (default: off)")
    p.add_argument("--out", default="bench.json", help="JSON output, a .json file; a .txt and a .md table "
                                                       "are written beside it under its name (default: bench.json)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu (default: auto)")


def fill_defaults(a: argparse.Namespace, on_gpu: bool) -> None:
    """The flags left unset take the GPU or the CPU defaults; on a CPU, a.notice says so in one line
    (printed once the arguments are checked, so a refusal stays one line)."""
    defaults = GPU_DEFAULTS if on_gpu else CPU_DEFAULTS
    unset = [key for key in defaults if getattr(a, key) is None]
    for key in unset:
        setattr(a, key, defaults[key])
    chosen = ", ".join(f"--{key} {defaults[key]}" for key in unset)
    a.notice = (f"rabench: no GPU: a CPU-sized bench ({chosen}); CPU timings do not answer the GPU question"
                if unset and not on_gpu else None)


def run(a: argparse.Namespace) -> None:
    from rabench.bench import run_bench
    from rabench.training.config import resolve_device

    fill_defaults(a, resolve_device(a.device).type == "cuda")
    a.argv = sys.argv[1:]
    run_bench(a)
