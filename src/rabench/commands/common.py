"""Arguments shared by `train` and `suite`, and their translation into TrainConfig fields.

Every flag defaults to None and its help shows TrainConfig's default: TrainConfig alone
owns defaults and validation, so a flag the user did not give never overrides anything.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rabench.errors import RabenchError, SettingError
from rabench.presets import PRESET_RECORDS
from rabench.training.config import DDP_COMM_HOOKS, default_of

GPT2, TINY = PRESET_RECORDS["gpt2-124m"], PRESET_RECORDS["tiny"]  # the defaults the help quotes

# flag -> TrainConfig field, for the plain ones (type, help); defaults come from TrainConfig
HYPER_FLAGS: dict[str, tuple[str, type, str]] = {
    "--batch-size": ("batch_size", int, "sequences per micro-batch (default: the preset's, 8)"),
    "--seq-len": ("seq_len", int, "tokens per sequence (default: the preset's context, 1024 for GPT-2)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, f"peak learning rate (default: the preset's; {GPT2.lr:g} for gpt2-124m, {TINY.lr:g} for "
                          "tiny)"),
    "--gate-lr-mult": ("gate_lr_mult", float, "learning-rate multiplier for the attention gates (RA's gate logits "
                                              "and discoverability vector, std-gated's gate)"),
    "--warmup-frac": ("warmup_frac", float, "warm-up as a share of the run's own budget (iterations or train time)"),
    "--warmup-iters": ("warmup_iters", int, "warm-up length in iterations instead of --warmup-frac"),
    "--eval-every": ("eval_every", int, "iterations between val_loss evaluations"),
    "--eval-tokens": ("eval_tokens", int, f"val tokens per evaluation (default: {GPT2.eval_tokens:,} for gpt2-*, "
                      f"{TINY.eval_tokens:,} for small/tiny; capped at the val split)"),
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


# TrainConfig field -> the flag that sets it, for errors said in the user's terms
FIELD_FLAGS = {field: flag for flag, (field, _, _) in HYPER_FLAGS.items()} | {
    "preset": "--preset", "seed": "--seed", "max_iters": "--iters", "time_budget_s": "--time", "out": "--out",
    "data": "--data", "attn_options": "--attn-opt", "compile_mode": "--compile-mode"}


def in_flag_terms(exc: SettingError) -> RabenchError:
    """The error with the flag the user typed (--batch-size) where TrainConfig names its field (batch_size)."""
    text, flag = str(exc), FIELD_FLAGS.get(exc.field)
    if flag is None or not text.startswith(exc.field):
        return exc
    return RabenchError(flag + text[len(exc.field):])


def path_arg(text: str) -> str:
    """argparse type of a folder flag: an empty path would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a folder")
    return text


def add_budget_args(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--time", help=f"training-time budget per run, e.g. 90s, 10m, 1h ({default_note})")
    g.add_argument("--iters", type=int, help="iteration budget per run instead of a time budget")


def add_hyper_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The TrainConfig flags; `skip`: flags the command defines itself (the suite's --lr takes a list)."""
    p.add_argument("--preset", default=None,
                   help="model preset: gpt2-124m, gpt2-350m, small, tiny, toy (tiny with a 512-id toy vocabulary: "
                        "the data `rabench demo` makes) (default: gpt2-124m with a GPU, tiny without)")
    for flag, (field, typ, text) in HYPER_FLAGS.items():
        if flag in skip:
            continue
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
    add_ddp_args(p)


def add_ddp_args(p: argparse.ArgumentParser) -> None:
    """Data-parallel settings; they act under torchrun only (notes/distributed.md)."""
    g = p.add_argument_group("data parallelism (under torchrun; one process ignores these)")
    g.add_argument("--ddp-bucket-cap-mb", type=float, default=None,
                   help=f"gradient all-reduce bucket size in MB (default: {default_of('ddp_bucket_cap_mb'):g})")
    g.add_argument("--ddp-grad-as-bucket-view", action="store_true", default=None,
                   help="gradients as views into DDP's buckets: no copy, less memory (default: off)")
    g.add_argument("--ddp-static-graph", action="store_true", default=None,
                   help="declare that every step uses the same parameters, so DDP plans once (default: off)")
    g.add_argument("--ddp-comm-hook", choices=DDP_COMM_HOOKS, default=None,
                   help="bf16: all-reduce gradients in bfloat16 (half the bytes; rounding changes the curve) "
                        "(default: none)")


def trains_on_cpu(device: str | None) -> bool:
    """Whether --device (None or auto: whatever is there) means the CPU."""
    from rabench.training.config import resolved_device_type

    return resolved_device_type(device or "auto") == "cpu"


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
        value = getattr(a, flag[2:].replace("-", "_"), None)
        if value is not None:
            kw[field] = value
    if a.compile:
        kw["compile"] = True
    if a.compile_mode is not None:
        kw["compile"], kw["compile_mode"] = True, a.compile_mode
    if a.verify:
        kw["verify_data"] = True
    for field in ("ddp_bucket_cap_mb", "ddp_grad_as_bucket_view", "ddp_static_graph", "ddp_comm_hook"):
        if getattr(a, field, None) is not None:
            kw[field] = getattr(a, field)
    if a.time is not None:
        try:
            kw["time_budget_s"] = parse_duration(a.time)
        except RabenchError as exc:
            raise RabenchError(f"--time: {exc}") from None
    if a.iters is not None:
        if a.iters < 1:
            raise RabenchError(f"--iters must be at least 1, got {a.iters}")
        kw["max_iters"] = a.iters
    return kw
