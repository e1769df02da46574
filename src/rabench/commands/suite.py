"""`rabench suite`: the plan's tests, resumably, into one folder, then the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rabench.commands.common import add_budget_args, add_hyper_args, train_config_kwargs
from rabench.errors import RabenchError

HELP = "run the plan's tests one after another (resumable) and write the report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", nargs="?", help="plan TOML (default: the user's plan: 4 tests + std-gated, gpt2-124m, 1h each)")
    p.add_argument("--out", required=True, help="suite folder")
    p.add_argument("--attn", help="comma-separated attention names (overrides the plan)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--data", help="prepared data folder (default: the bundled Austen corpus, prepared into the suite)")
    p.add_argument("--until-plateau", action="store_true", help="full test: each config runs to a val_loss plateau (time cap = --time)")
    add_budget_args(p, "default 1h, the plan's short test")
    add_hyper_args(p)


def run(a: argparse.Namespace) -> None:
    from rabench.training.suite import load_plan, run_suite

    plan = load_plan(a.plan)
    kw = train_config_kwargs(a)
    if a.preset:
        plan.preset = a.preset
    if a.attn:
        plan.attns = [s.strip() for s in a.attn.split(",") if s.strip()]
    if a.seeds:
        try:
            plan.seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        except ValueError:
            raise RabenchError(f"--seeds {a.seeds!r}: write comma-separated integers, e.g. 0,1,2") from None
    if "time_budget_s" in kw:
        plan.time_budget_s, plan.max_iters = kw.pop("time_budget_s"), None
    if "max_iters" in kw:
        plan.max_iters, plan.time_budget_s = kw.pop("max_iters"), None
    plan.until_plateau = plan.until_plateau or a.until_plateau
    kw.pop("preset")
    progress_bar = kw.pop("progress_bar")
    defaults = {"grad_accum": 1, "warmup_iters": 100, "eval_every": 100, "eval_batches": 20, "compile": False, "device": "auto"}
    plan.train |= {k: v for k, v in kw.items() if v is not None and defaults.get(k, None) != v}
    from rabench.training.distributed import is_main_process, launched_by_torchrun

    data = a.data or plan.data
    if data is None:
        if launched_by_torchrun():
            raise RabenchError("under torchrun, prepare the data first and pass --data DIR")
        from rabench.training.demo import prepared_austen

        data = prepared_austen(Path(a.out))
    run_suite(plan, a.out, data, progress_bar=progress_bar)
    if is_main_process():
        from rabench.analysis import write_report

        write_report(a.out)  # prints where it wrote
