"""`rabench prepare`: tokenize text into GPT-2 token shards."""

from __future__ import annotations

import argparse

from rabench.commands.common import path_arg

HELP = "tokenize text into GPT-2 token shards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="austen | FILE.jsonl[.xz|.gz] | FILE.txt or glob | hf:fineweb-edu | hf:tinystories | hf:openwebtext | hf:NAME[:CONFIG]")
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--max-tokens", type=int, help="stop after this many tokens (needed for hf: streams; default: all)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of documents in the val split (default: 0.05)")
    p.add_argument("--workers", type=int, help="tokenizer threads, at most the cores (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder (default: refuse)")


def run(a: argparse.Namespace) -> None:
    from rabench.data import prepare

    meta = prepare(a.sources, a.out, max_tokens=a.max_tokens, val_fraction=a.val_fraction, workers=a.workers,
                   overwrite=a.overwrite)
    print(f"prepared {a.out}: " + ", ".join(f"{s} {meta['splits'][s]['tokens']:,} tokens" for s in ("train", "val")))
    if meta["sources_not_reached"]:
        print(f"note: --max-tokens {a.max_tokens:,} was reached before {', '.join(meta['sources_not_reached'])}: "
              "sources are read in the order given, so these are not in the data (raise the cap or reorder them)")
