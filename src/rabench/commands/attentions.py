"""`rabench attentions`: the attention variants, their options, and the contract a plug-in implements."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

HELP = "list the attention variants and their options (and the plug-in contract, with --help)"


def contract_text() -> str:
    """The contract as `rabench.attention.base` documents it, read without importing torch."""
    source = (Path(__file__).resolve().parent.parent / "attention" / "base.py").read_text()
    return ast.get_docstring(ast.parse(source)) or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = ("Lists the built-in attentions and those installed packages declare in the\n"
                     "`rabench.attentions` entry-point group. Any command that takes an attention also takes\n"
                     "package.module:ClassName or path/to/file.py:ClassName; `rabench check REF` tests one.")
    p.epilog = "The contract an attention implements:\n\n" + contract_text()
    p.add_argument("refs", nargs="*", metavar="ATTN",
                   help="describe these instead (names, module:Class or file.py:Class references)")


def run(a: argparse.Namespace) -> None:
    from rabench import attention
    from rabench.errors import RabenchError

    for ref in a.refs or attention.names():
        try:
            e = attention.entry(ref)
        except RabenchError as exc:
            if a.refs:
                raise
            print(f"{ref:<14} [plug-in that does not load] {exc}")  # one broken package does not hide the rest
            continue
        opts = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        gpu = " (needs a CUDA GPU)" if e.needs_gpu else ""
        kind = f"{e.family}, variant" if e.variant and not e.plugin else e.attn_role if e.plugin else e.family
        kind += ", plug-in" if e.plugin else ""
        print(f"{ref:<14} [{kind}] {e.summary}{gpu}" + (f"\n{'':<14}   options: {opts}" if opts else ""))
