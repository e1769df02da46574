"""The `rabench` command line: prepare, train, suite, report, bench, demo, attentions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rabench.errors import RabenchError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input in one line instead of usage plus error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _budget_args(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--time", help=f"training-time budget per run, e.g. 90s, 10m, 1h ({default_note})")
    g.add_argument("--iters", type=int, help="iteration budget per run instead of a time budget")


def _hyper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="model preset: gpt2-124m (default), gpt2-350m, small, tiny")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (preset default: 8)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (preset default: its context, 1024 for GPT-2)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate (preset default; 6e-4 for gpt2-124m)")
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100, help="iterations between val_loss evaluations")
    p.add_argument("--eval-batches", type=int, default=20, help="val batches per evaluation (fixed val tokens)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time is not counted)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rabench", description="rabench: does Reciprocal Attention (RA) beat standard attention "
                           "when you pay for it in wall-clock time? Typical flow: prepare -> suite (or train) -> report.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("prepare", help="tokenize text into GPT-2 token shards")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="austen | FILE.jsonl[.xz|.gz] | FILE.txt or glob | hf:fineweb-edu | hf:tinystories | hf:openwebtext | hf:NAME[:CONFIG]")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-tokens", type=int, help="stop after this many tokens (needed for hf: streams)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of documents in the val split")
    p.add_argument("--workers", type=int, help="tokenizer processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")

    p = sub.add_parser("train", help="train one config for a time or iteration budget")
    p.add_argument("--attn", required=True, help="attention name (see `rabench attentions`)")
    p.add_argument("--attn-opt", action="append", metavar="KEY=VALUE", help="attention option, repeatable")
    p.add_argument("--data", required=True, help="folder made by `rabench prepare`")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--until-plateau", action="store_true", help="full test: run until val_loss plateaus, then cool down")
    _budget_args(p, "required unless --iters")
    _hyper_args(p)

    p = sub.add_parser("suite", help="run the plan's tests one after another (resumable) and write the report")
    p.add_argument("plan", nargs="?", help="plan TOML (default: the user's plan: 4 tests + std-gated, gpt2-124m, 1h each)")
    p.add_argument("--out", required=True, help="suite folder")
    p.add_argument("--attn", help="comma-separated attention names (overrides the plan)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--data", help="prepared data folder (default: the bundled Austen corpus, prepared into the suite)")
    p.add_argument("--until-plateau", action="store_true", help="full test: each config runs to a val_loss plateau (time cap = --time)")
    _budget_args(p, "default 1h, the plan's short test")
    _hyper_args(p)

    p = sub.add_parser("report", help="write report.md and report.html for a suite or folder of runs")
    p.add_argument("folder")
    p.add_argument("--out", help="where to write the report (default: the folder)")

    p = sub.add_parser("bench", help="attention and training-step speed table (ratios to sdpa from the same run)")
    p.add_argument("--attn", help="comma-separated attention names (default: sdpa,open,ra-open,ra-triton,ra-folded + variants)")
    p.add_argument("--shape", default="8,12,1024,64", help="B,H,T,D for the attention rows")
    p.add_argument("--preset", default="gpt2-124m", help="model preset for the training-step rows")
    p.add_argument("--no-steps", action="store_true", help="attention rows only")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="both", help="training steps compiled, not, or both")
    p.add_argument("--out", default="bench.json", help="JSON output")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("demo", help="the plan's comparison at toy scale on the bundled Austen corpus (minutes on a CPU)")
    p.add_argument("--out", default="rabench-demo", help="output folder")
    p.add_argument("--seconds", type=float, default=25.0, help="training seconds per attention")
    p.add_argument("--preset", default="tiny")

    sub.add_parser("attentions", help="list the attention variants and their options")
    return parser


def cmd_prepare(a: argparse.Namespace) -> None:
    from rabench.data import prepare

    meta = prepare(a.sources, a.out, max_tokens=a.max_tokens, val_fraction=a.val_fraction, workers=a.workers,
                   overwrite=a.overwrite)
    print(f"prepared {a.out}: " + ", ".join(f"{s} {meta['splits'][s]['tokens']:,} tokens" for s in ("train", "val")))


def _train_config_kwargs(a: argparse.Namespace) -> dict:
    from rabench.training import parse_duration

    kw = {"preset": a.preset or "gpt2-124m", "batch_size": a.batch_size, "seq_len": a.seq_len, "grad_accum": a.grad_accum,
          "lr": a.lr, "warmup_iters": a.warmup_iters, "eval_every": a.eval_every, "eval_batches": a.eval_batches,
          "compile": a.compile, "device": a.device, "progress_bar": not a.no_progress}
    if a.time:
        kw["time_budget_s"] = parse_duration(a.time)
    if a.iters is not None:
        if a.iters < 1:
            raise RabenchError("--iters must be at least 1")
        kw["max_iters"] = a.iters
    return kw


def cmd_train(a: argparse.Namespace) -> None:
    from rabench import attention
    from rabench.training import TrainConfig, train

    options = attention.parse_option_strings(a.attn_opt)
    attention.resolve_options(a.attn, options)  # unknown names and options fail before anything loads
    kw = _train_config_kwargs(a)
    cfg = TrainConfig(attn=a.attn, data=a.data, out=a.out, seed=a.seed, resume=a.resume, until_plateau=a.until_plateau,
                      attn_options=options, **kw)
    summary = train(cfg)
    if summary:
        print(f"{a.out}: {summary['iters']} iters in {summary['train_time_s']:.1f}s training time "
              f"({summary['ms_per_iter']} ms/iter), final val_loss {summary['final_val_loss']:.4f} [{summary['stop_reason']}]")


def cmd_suite(a: argparse.Namespace) -> None:
    from rabench.training.suite import load_plan, run_suite

    plan = load_plan(a.plan)
    kw = _train_config_kwargs(a)
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


def cmd_report(a: argparse.Namespace) -> None:
    from rabench.analysis import write_report

    write_report(a.folder, a.out)  # prints where it wrote


def cmd_bench(a: argparse.Namespace) -> None:
    from rabench.bench import run_bench

    run_bench(a)


def cmd_demo(a: argparse.Namespace) -> None:
    from rabench.training.demo import run_demo

    run_demo(a.out, seconds=a.seconds, preset=a.preset)


def cmd_attentions(a: argparse.Namespace) -> None:
    from rabench import attention

    for name in attention.names():
        e = attention.entry(name)
        opts = ", ".join(f"{k}={v}" for k, v in e.defaults.items())
        print(f"{name:<14} [{e.family}] {e.summary}" + (f"\n{'':<14}   options: {opts}" if opts else ""))


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "suite": cmd_suite, "report": cmd_report, "bench": cmd_bench,
            "demo": cmd_demo, "attentions": cmd_attentions}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except RabenchError as exc:
        print(f"rabench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rabench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
