"""`rabench bench`: the plan's speed table, measured on this machine, all rows in one run.

- attention alone (attention_rows): per layer, forward and forward+backward, GPU-only time
  (kernel time from the CUDA profiler) and host-inclusive time (back-to-back calls), for every attention and for
  each SDPA backend, at several sequence lengths with the token count held fixed;
- a full training step (step_rows) through TrainStep, eager and compiled, for every attention
  at the same sequence lengths.
Ratios are to sdpa in the same run.  Speed targets live here, never in unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from rabench import attention
from rabench.bench.attention_rows import SDPA_BACKENDS, add_attention_ratios, attention_row
from rabench.bench.step_rows import add_step_ratios, step_row
from rabench.bench.table import format_markdown, format_text
from rabench.errors import RabenchError
from rabench.experiment import BENCH_ATTNS
from rabench.flops import card_peak
from rabench.fileio import write_atomic


def default_attns() -> list[str]:
    variants = [n for n in attention.names() if attention.entry(n).variant and n not in BENCH_ATTNS]
    return BENCH_ATTNS + variants


def machine_info(device: torch.device) -> dict[str, Any]:
    import rabench

    info = {"device": device.type, "torch": torch.__version__, "rabench": rabench.__version__, "host": platform.node()}
    if device.type == "cuda":
        import triton

        info |= {"gpu": torch.cuda.get_device_name(device), "triton": triton.__version__,
                 "cuda": torch.version.cuda}
    peak = card_peak(info["gpu"]) if device.type == "cuda" else None
    info["mfu_peak"] = peak[0] if peak else ("none: a CPU" if device.type != "cuda" else "unknown card: MFU n/a")
    return info


def safely(fn: Callable[[], dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """A row that fails (out of memory, unsupported shape) is reported, not fatal to the table."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the table must survive one bad row
        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
        return {**base, "error": f"{type(exc).__name__}: {msg}"}
    finally:
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        b, h, t, d = (int(v) for v in text.split(","))
    except ValueError:
        raise RabenchError(f"--shape {text!r}: write B,H,T,D, e.g. 8,12,1024,64") from None
    if min(b, h, t, d) < 1:
        raise RabenchError(f"--shape {text!r}: every size must be >= 1")
    return b, h, t, d


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RabenchError(f"{flag} {text!r}: write comma-separated integers, e.g. 1024,2048") from None
    if not values or min(values) < 1:
        raise RabenchError(f"{flag} {text!r}: give at least one length >= 1")
    return values


class Progress:
    """One line per finished row, with the row count and the elapsed time."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def start(self, what: str) -> None:
        print(f"[bench {self.done + 1}/{self.total} +{time.perf_counter() - self.t0:.0f}s] {what} ...", flush=True)

    def finish(self, row: dict[str, Any]) -> None:
        self.done += 1
        keys = ("error", "fwd_bwd_gpu_ms", "fwd_bwd_host_ms", "ms_per_iter", "warmup_s")
        print("    " + ", ".join(f"{k}={row[k]}" for k in keys if k in row), flush=True)


def table_paths(out: Path) -> list[Path]:
    return [out, out.with_suffix(".txt"), out.with_suffix(".md")]


def partial_tables(out: Path) -> Path:
    return out.with_name(f"{out.stem}-partial{out.suffix}")


def checked_out(text: str) -> Path:
    """--out, refused before any measurement when the tables could not all be written there: the
    .txt and .md tables take --out's name with their own suffix, so --out must end in .json (a .md
    --out would be overwritten by its own markdown table); no table path may be a folder, and a
    .txt or .md table lying there without its .json is not a bench's, so it is not replaced."""
    out = Path(text)  # an empty --out never gets here: cli.refuse_empty_values refuses it for every command
    if out.is_dir():
        raise RabenchError(f"--out {text} is a folder; name a .json file in it, e.g. {out / 'bench.json'}")
    if out.suffix != ".json":
        raise RabenchError(f"--out {text}: name a .json file (the .txt and .md tables are written beside it under "
                           f"its name), e.g. {out.with_suffix('.json')}")
    for path in table_paths(out) + table_paths(partial_tables(out)):
        if path.is_dir():
            raise RabenchError(f"--out {text}: the table path {path} is a folder; choose another --out")
    strays = [p.name for p in table_paths(out)[1:] if p.exists()]
    if strays and not out.exists():
        raise RabenchError(f"--out {text}: {', '.join(strays)} exist without {out.name}, so they are not a bench's "
                           "tables; move them or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RabenchError(f"--out {text}: cannot create its folder {out.parent}: {exc.strerror or exc}") from None
    return out


def growing_tables(out: Path) -> Path:
    """Where the tables grow row by row: at `out` itself, or, when an earlier bench's tables are
    there, beside them (<name>-partial.*) until complete, so a bench cut off never replaces them."""
    if not any(path.exists() for path in table_paths(out)):
        return out
    partial = partial_tables(out)
    print(f"rabench: {out} exists: this bench writes {partial} (and .txt, .md) as rows come, and replaces "
          f"{out.name} once complete", file=sys.stderr)
    return partial


def save_tables(result: dict[str, Any], out: Path, done: int, planned: int) -> None:
    """bench.json, .txt and .md with the rows measured so far (ratios recomputed), each written
    atomically; `rows` says how many of the planned rows they hold."""
    add_attention_ratios(result["attention"])
    add_step_ratios(result["steps"])
    result["rows"] = {"measured": done, "planned": planned}
    for path, text in ((out, json.dumps(result, indent=2) + "\n"), (out.with_suffix(".txt"), format_text(result) + "\n"),
                       (out.with_suffix(".md"), format_markdown(result) + "\n")):
        write_atomic(path, text.encode(), "bench table")


def attention_call_bytes(shape: tuple[int, int, int, int]) -> int:
    """A rough upper bound on one attention row's memory: q, k, v, the output and their gradients,
    and a few (B, H, T, T) score matrices for the attentions that materialise them (float32)."""
    b, h, t, d = shape
    return 4 * (8 * b * h * t * d + 3 * b * h * t * t)


def check_fits(shapes: list[tuple[int, int, int, int]], device: torch.device, text: str) -> None:
    """Refuse a shape whose rows could not fit the device at all, rather than measure 45 allocator failures."""
    from rabench.training.config import device_memory_bytes

    memory = device_memory_bytes(device)
    worst = max(shapes, key=attention_call_bytes)
    need = attention_call_bytes(worst)
    if need > memory:
        raise RabenchError(f"--shape {text}: an attention row at T={worst[2]} needs about {need / 2**30:,.0f} GiB, "
                           f"more than this {device.type}'s {memory / 2**30:,.0f} GiB; use smaller sizes")


def check_rows_ran(result: dict[str, Any], out: Path) -> None:
    """Exit non-zero when every row failed: the tables then hold only errors."""
    rows = result["attention"] + result["steps"]
    if rows and all("error" in row for row in rows):
        raise RabenchError(f"every row failed (the first: {rows[0]['error']}); see {out.with_suffix('.txt')}")


def run_bench(a: argparse.Namespace) -> dict[str, Any]:
    from rabench.model import PRESETS
    from rabench.training.config import resolve_device

    out = checked_out(a.out)
    device = resolve_device(a.device)
    if a.no_steps and getattr(a, "no_attention", False):
        raise RabenchError("--no-steps with --no-attention leaves nothing to measure; drop one of them")
    if a.preset not in PRESETS:
        raise RabenchError(f"--preset {a.preset!r} is unknown; choose from: {', '.join(PRESETS)}")
    names = [n.strip() for n in a.attn.split(",")] if a.attn is not None else default_attns()
    if not all(names):
        raise RabenchError(f"--attn {a.attn!r}: give comma-separated attention names (see `rabench attentions`)")
    for n in names:
        attention.entry(n)
    b, h, t0, d = parse_shape(a.shape)
    seq_lens = parse_ints(a.seq_lens, "--seq-lens") if a.seq_lens is not None else [t0]
    step_seq_lens = parse_ints(a.step_seq_lens, "--step-seq-lens") if a.step_seq_lens is not None else seq_lens
    tokens = b * t0
    if not getattr(a, "no_attention", False):
        check_fits([(max(1, tokens // t), h, t, d) for t in seq_lens], device, a.shape)
    if getattr(a, "notice", None):
        print(a.notice, file=sys.stderr)
    modes = {"no": ["none"], "yes": [a.compile_mode], "both": ["none", a.compile_mode]}[a.compile]
    if device.type != "cuda":
        backends: tuple[str, ...] = ()
    else:
        backends = SDPA_BACKENDS if "sdpa" in names else ()
    att_lens = [] if getattr(a, "no_attention", False) else seq_lens
    n_att = len(att_lens) * (len(names) + len(backends))
    n_step = 0 if a.no_steps else len(step_seq_lens) * len(modes) * len(names)
    progress = Progress(n_att + n_step)
    result: dict[str, Any] = {
        "machine": machine_info(device), "shape": [b, h, t0, d], "tokens_per_step": tokens, "preset": a.preset,
        "command": "rabench " + " ".join(a.argv) if getattr(a, "argv", None) else None,
        "timing": ("attention: per layer (mean over 12 layer modules); gpu = kernel time summed from the "
                   "CUDA profiler over 10 calls (device time only, no launch gaps), host = 30 calls back "
                   "to back, one sync (host-inclusive); "
                   "steps: TrainStep, window of 20 steps with one sync after warm-up (compilation "
                   "excluded, reported as warmup_s); synced_ms = median of 5 steps synced each; GFLOP/token = "
                   "model FLOPs per token, forward + backward (rabench.flops: each attention's declared count, "
                   "causal, plus 6 per matmul weight); MFU = that x tokens/s over machine.mfu_peak"),
        "attention": [], "steps": []}
    writing = growing_tables(out)

    def measured(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Keep the row and rewrite the tables: a bench cut off (a call's time limit, Ctrl-C) keeps its rows."""
        progress.finish(row)
        rows.append(row)
        save_tables(result, writing, progress.done, progress.total)

    for t in att_lens:
        shape = (max(1, tokens // t), h, t, d)
        for n in names:
            runs = [(n, None)] + ([("sdpa", be) for be in backends] if n == "sdpa" else [])
            for name, be in runs:
                label = name if be is None else f"{name}[{be}]"
                progress.start(f"attention {label} T={t}")
                measured(safely(lambda: attention_row(name, shape, device, backend=be), {"attn": label, "T": t}),
                         result["attention"])
    if not a.no_steps:
        for t in step_seq_lens:
            for mode in modes:
                for n in names:
                    progress.start(f"step {n} T={t} compile={mode}")
                    measured(safely(lambda: step_row(n, a.preset, t, tokens, mode, device,
                                                     compile_optimizer=a.compile_optimizer),
                                    {"attn": n, "T": t, "compiled": mode}), result["steps"])
    save_tables(result, writing, progress.done, progress.total)
    for suffix in (out.suffix, ".txt", ".md"):  # complete: now it may replace an earlier bench's tables
        os.replace(writing.with_suffix(suffix), out.with_suffix(suffix))
    print(format_text(result))
    print(f"wrote {out}, {out.with_suffix('.txt')} and {out.with_suffix('.md')}")
    check_rows_ran(result, out)
    return result
