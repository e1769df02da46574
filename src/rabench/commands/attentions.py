"""`rabench attentions`: the registered attention variants and their options."""

from __future__ import annotations

import argparse

HELP = "list the attention variants and their options"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(a: argparse.Namespace) -> None:
    from rabench import attention

    for name in attention.names():
        e = attention.entry(name)
        opts = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        gpu = " (needs a CUDA GPU)" if e.needs_gpu else ""
        kind = f"{e.family}, variant" if e.variant else e.family
        print(f"{name:<14} [{kind}] {e.summary}{gpu}" + (f"\n{'':<14}   options: {opts}" if opts else ""))
