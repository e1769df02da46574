"""Arguments shared by `train` and `suite`, and their translation into TrainConfig fields."""

from __future__ import annotations

import argparse

from rabench.errors import RabenchError


def add_budget_args(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--time", help=f"training-time budget per run, e.g. 90s, 10m, 1h ({default_note})")
    g.add_argument("--iters", type=int, help="iteration budget per run instead of a time budget")


def add_hyper_args(p: argparse.ArgumentParser) -> None:
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


def train_config_kwargs(a: argparse.Namespace) -> dict:
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
