"""`rabench train`: one config for a time or iteration budget."""

from __future__ import annotations

import argparse

from rabench.commands.common import add_budget_args, add_hyper_args, train_config_kwargs

HELP = "train one config for a time or iteration budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attn", required=True, help="attention name (see `rabench attentions`)")
    p.add_argument("--attn-opt", action="append", metavar="KEY=VALUE", help="attention option, repeatable")
    p.add_argument("--data", required=True, help="folder made by `rabench prepare`")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--until-plateau", action="store_true", help="full test: run until val_loss plateaus, then cool down")
    add_budget_args(p, "required unless --iters")
    add_hyper_args(p)


def run(a: argparse.Namespace) -> None:
    from rabench import attention
    from rabench.training import TrainConfig, train

    options = attention.parse_option_strings(a.attn_opt)
    attention.resolve_options(a.attn, options)  # unknown names and options fail before anything loads
    kw = train_config_kwargs(a)
    cfg = TrainConfig(attn=a.attn, data=a.data, out=a.out, seed=a.seed, resume=a.resume, until_plateau=a.until_plateau,
                      attn_options=options, **kw)
    summary = train(cfg)
    if summary:
        print(f"{a.out}: {summary['iters']} iters in {summary['train_time_s']:.1f}s training time "
              f"({summary['ms_per_iter']} ms/iter), final val_loss {summary['final_val_loss']:.4f} [{summary['stop_reason']}]")
