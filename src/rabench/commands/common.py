"""Arguments shared by `train` and `suite`, and their translation into TrainConfig fields.

Every flag defaults to None and its help shows TrainConfig's default: TrainConfig alone
owns defaults and validation, so a flag the user did not give never overrides anything.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rabench.errors import RabenchError
from rabench.training.config import EVAL_TOKENS_GPT2, EVAL_TOKENS_SMALL, PRESET_LR, default_of

# flag -> TrainConfig field, for the plain ones (type, help); defaults come from TrainConfig
HYPER_FLAGS: dict[str, tuple[str, type, str]] = {
    "--batch-size": ("batch_size", int, "sequences per micro-batch (default: the preset's, 8)"),
    "--seq-len": ("seq_len", int, "tokens per sequence (default: the preset's context, 1024 for GPT-2)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, f"peak learning rate (default: the preset's; {PRESET_LR['gpt2-124m']:g} for gpt2-124m, "
                          f"{PRESET_LR['tiny']:g} for tiny)"),
    "--warmup-frac": ("warmup_frac", float, "warm-up as a share of the run's own budget (iterations or train time)"),
    "--warmup-iters": ("warmup_iters", int, "warm-up length in iterations instead of --warmup-frac"),
    "--eval-every": ("eval_every", int, "iterations between val_loss evaluations"),
    "--eval-tokens": ("eval_tokens", int, f"val tokens per evaluation (default: {EVAL_TOKENS_GPT2:,} for gpt2-*, "
                      f"{EVAL_TOKENS_SMALL:,} for small/tiny; capped at the val split)"),
    "--eval-batches": ("eval_batches", int, "val batches per evaluation, instead of --eval-tokens"),
    "--log-every": ("log_every", int, "iterations between train-loss records"),
    "--ckpt-every": ("ckpt_every", str, "checkpoint interval: a duration (5m, 1h) or iterations (500it)"),
    "--plateau-patience": ("plateau_patience", int, "with --until-plateau: evaluations in the plateau window"),
    "--plateau-min-delta": ("plateau_min_delta", float, "with --until-plateau: nats the window must beat the best "
                            "evaluation before it by, or the run has plateaued"),
    "--cooldown-frac": ("cooldown_frac", float, "with --until-plateau: cooldown after the plateau as a share of the "
                        "iterations done"),
    "--cooldown-iters": ("cooldown_iters", int, "with --until-plateau: cooldown length in iterations instead of "
                         "--cooldown-frac"),
    "--device": ("device", str, "auto (cuda if present), cuda, cuda:N or cpu"),
}


def add_budget_args(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--time", help=f"training-time budget per run, e.g. 90s, 10m, 1h ({default_note})")
    g.add_argument("--iters", type=int, help="iteration budget per run instead of a time budget")


def add_hyper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help="model preset: gpt2-124m, gpt2-350m, small, tiny (default: gpt2-124m with a GPU, tiny without)")
    for flag, (field, typ, text) in HYPER_FLAGS.items():
        value = default_of(field)
        default = "" if "default:" in text else f" (default: {'unset' if value is None else value})"
        p.add_argument(flag, type=typ, default=None, help=text + default)
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model (compile time is not counted; default: off)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode: default, reduce-overhead, max-autotune-no-cudagraphs (default: default "
                        "when --compile)")
    p.add_argument("--verify", action="store_true",
                   help="check the data's SHA-256 checksums against meta.json before training (default: off; the "
                        "token range is always checked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar with ETA)")


def trains_on_cpu(device: str | None) -> bool:
    """Whether --device (None or auto: whatever is there) means the CPU."""
    import torch

    return device == "cpu" or (device in (None, "auto") and not torch.cuda.is_available())


def default_preset(device: str | None) -> str:
    """gpt2-124m where a GPU trains it; tiny (with a one-line notice) on a CPU."""
    if trains_on_cpu(device):
        print("rabench: no GPU: using the CPU-sized preset tiny (pass --preset gpt2-124m to insist; it takes hours "
              "on a CPU)", file=sys.stderr)
        return "tiny"
    return "gpt2-124m"


def warn_if_slow(preset: str, device: str | None) -> None:
    if trains_on_cpu(device) and preset.startswith("gpt2"):
        print(f"rabench: note: {preset} on a CPU takes hours for a few hundred iterations; --preset tiny is the "
              "CPU-sized model", file=sys.stderr)


def train_config_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields the user set (others keep TrainConfig's defaults).

    Always holds 'preset' (None when not given) and 'progress_bar', which the suite reads.
    """
    from rabench.training import parse_duration

    kw: dict[str, Any] = {"preset": a.preset, "progress_bar": not a.no_progress}
    for flag, (field, _, _) in HYPER_FLAGS.items():
        value = getattr(a, flag[2:].replace("-", "_"))
        if value is not None:
            kw[field] = value
    if a.compile:
        kw["compile"] = True
    if a.compile_mode is not None:
        kw["compile"], kw["compile_mode"] = True, a.compile_mode
    if a.verify:
        kw["verify_data"] = True
    if a.time is not None:
        kw["time_budget_s"] = parse_duration(a.time)
    if a.iters is not None:
        if a.iters < 1:
            raise RabenchError(f"--iters must be at least 1, got {a.iters}")
        kw["max_iters"] = a.iters
    return kw
