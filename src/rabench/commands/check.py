"""`rabench check ATTN`: conformance checks for an attention before it costs GPU time."""

from __future__ import annotations

import argparse
import os

HELP = "check that an attention (built-in or plug-in) is fit for a fair comparison"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Runs each conformance check on the tiny preset and prints one line per check: PASS, SKIP "
                     "(and why) or FAIL (and what failed). Exit status 0 when nothing failed, 1 otherwise.")
    p.add_argument("attn", help="a built-in name, an installed entry point, package.module:ClassName or "
                                "path/to/file.py:ClassName (see `rabench attentions --help` for the contract)")
    p.add_argument("--attn-opt", action="append", metavar="KEY=VALUE", help="attention option, repeatable (default: none)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu (default: auto)")


def run(a: argparse.Namespace) -> int:
    from rabench import attention
    from rabench.conformance import run_checks
    from rabench.errors import RabenchError
    from rabench.training.config import resolve_device

    device = resolve_device(a.device)
    if attention.entry(a.attn).needs_gpu and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RabenchError(f"{a.attn} needs a CUDA GPU (or TRITON_INTERPRET=1 set before starting, slow)")
    options = attention.parse_option_strings(a.attn_opt)
    results = run_checks(a.attn, options, device)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.name for r in results if r.status == "FAIL"]
    print(f"{a.attn}: " + (f"{len(failed)} check(s) failed ({', '.join(failed)})" if failed
                           else f"conforms ({sum(r.status == 'PASS' for r in results)} passed, "
                                f"{sum(r.status == 'SKIP' for r in results)} skipped) on {device}"))
    return 1 if failed else 0
