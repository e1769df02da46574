"""`rabench train`: one config for a time or iteration budget."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rabench.commands.common import (add_budget_args, add_hyper_args, default_preset, in_flag_terms, path_arg,
                                     train_config_kwargs, warn_if_slow)
from rabench.errors import SettingError

HELP = "train one config for a time or iteration budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", required=True, help="attention: a name (see `rabench attentions`), package.module:ClassName "
                                                 "or path/to/file.py:ClassName")
    p.add_argument("--attn-opt", action="append", metavar="KEY=VALUE", help="attention option, repeatable (default: none)")
    p.add_argument("--data", required=True, type=path_arg, help="folder made by `rabench prepare`")
    p.add_argument("--out", required=True, type=path_arg, help="run folder")
    p.add_argument("--seed", type=int, default=None, help="seed of the weights and the data order, 0 to 2**63 - 1 "
                                                          "(default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (refused if a curve-changing setting differs)")
    p.add_argument("--until-plateau", action="store_true", help="full test: run until val_loss plateaus, then cool down")
    add_budget_args(p, "one of --time or --iters is required")
    add_hyper_args(p)


def run(a: argparse.Namespace) -> None:
    from rabench import attention
    from rabench.training import TrainConfig, train

    options = attention.parse_option_strings(a.attn_opt)
    attention.resolve_options(a.attn, options)  # unknown names and options fail before anything loads
    kw = train_config_kwargs(a)
    kw.pop("preset")
    preset = a.preset if a.preset is not None else default_preset(kw.get("device"))
    warn_if_slow(preset, kw.get("device"))
    if a.seed is not None:
        kw["seed"] = a.seed
    if a.resume and not Path(a.out).exists():
        print(f"rabench: --resume: {a.out} holds no run, so there is nothing to resume; starting a new run there",
              file=sys.stderr)
    try:
        cfg = TrainConfig(attn=a.attn, data=a.data, out=a.out, preset=preset, resume=a.resume,
                          until_plateau=a.until_plateau, attn_options=options, **kw)
        summary = train(cfg)
    except SettingError as exc:  # said with the flag the user typed
        raise in_flag_terms(exc) from None
    if summary:
        ms = summary["ms_per_iter"]
        final = summary["final_val_loss"]
        print(f"{a.out}: {summary['iters']} iters in {summary['train_time_s']:.1f}s training time "
              f"({ms if ms is not None else '-'} ms/iter), final val_loss "
              f"{final:.4f} [{summary['stop_reason']}]" if final is not None else f"{a.out}: {summary['iters']} iters")
