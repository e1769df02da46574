"""A full training step through `TrainStep`, exactly what the trainer and the suite's
calibration run: forward and backward of the preset model at a fixed token count, gradient
clipping and AdamW, eager and compiled.

Timing: after untimed warm-up (compilation, autotuning, CUDA-graph recording), `steps` steps run
back to back with one synchronisation at the end (the trainer's log-window accounting);
ms_per_iter is that window's wall time per step.  synced_ms is the median of a few steps each
followed by a synchronisation, for comparison.  Compilation time is reported apart (warmup_s).
Memory: the peak allocated over warm-up and the timed steps (a CUDA graph allocates its memory
while it is recorded, in warm-up, and none when replayed), and the peak reserved by the caching
allocator, private graph pools included: what the card must hold.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from typing import Any

import torch

from rabench.bench.attention_rows import ANNEAL_PROGRESS
from rabench.flops import card_peak, step_flops_per_token
from rabench.training.step import TrainStep, make_optimizer, sync

LR = 6e-4


@dataclasses.dataclass
class StepTiming:
    warmup_s: float  # warm-up and the first steps: compilation, autotuning, graph recording
    ms_per_iter: float  # free-running: `steps` steps, one synchronisation at the end
    synced_ms: float  # median of steps each followed by a synchronisation
    loss: float  # the last free-running step's


def time_steps(step: TrainStep, batches: list, device: torch.device, steps: int, synced_steps: int,
               warm_passes: int) -> StepTiming:
    """Time `step` the way the trainer accounts for it, after untimed warm-up (every path of a
    step schedule, then `warm_passes` optimizer steps for state allocation and graph recording).
    Each step gets its index, as the trainer passes it (ra-amortized's refreshes)."""
    counter = itertools.count()
    t0 = time.perf_counter()
    step.warm_up(batches, warm_passes)
    for _ in range(warm_passes):
        step.run(batches, LR, next(counter))
    sync(device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step.run(batches, LR, next(counter))
    sync(device)
    ms = 1000 * (time.perf_counter() - t0) / steps
    synced = []
    for _ in range(synced_steps):
        t1 = time.perf_counter()
        step.run(batches, LR, next(counter))
        sync(device)
        synced.append(1000 * (time.perf_counter() - t1))
    return StepTiming(warmup_s, ms, statistics.median(synced), float(loss))


def step_row(name: str, preset_name: str, t: int, tokens: int, compile_mode: str, device: torch.device,
             compile_optimizer: bool = False, steps: int | None = None) -> dict[str, Any]:
    from rabench.model import GPT, preset

    gpu = device.type == "cuda"
    steps = steps or (20 if gpu else 2)  # on a CPU the table's structure is what counts
    b = max(1, tokens // t)
    cfg = preset(preset_name)
    if t > cfg.block_size:
        cfg = dataclasses.replace(cfg, block_size=t)  # a longer position table; nothing else changes
    torch.manual_seed(0)
    model = GPT(cfg, name).to(device)
    model.set_progress(ANNEAL_PROGRESS)
    impl = "foreach" if compile_optimizer else "fused"
    opt = make_optimizer(model, LR, 0.1, (0.9, 0.95), device, impl=impl)
    step = TrainStep(model, opt, device, grad_clip=1.0, compile_mode=compile_mode,
                     compile_optimizer=compile_optimizer and compile_mode != "none")
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, 50257, (b, t + 1), generator=gen).to(device)
    batches = [(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())]

    if device.type == "cuda":  # the peak spans warm-up: CUDA graphs take their memory when recorded
        torch.cuda.reset_peak_memory_stats()
    timing = time_steps(step, batches, device, steps, 5 if gpu else 1, 3 if gpu else 1)
    row = {"attn": name, "T": t, "B": b, "compiled": compile_mode, "compiled_optimizer": compile_optimizer,
           "ms_per_iter": round(timing.ms_per_iter, 3), "synced_ms": round(timing.synced_ms, 3),
           "tokens_per_s": round(b * t / (timing.ms_per_iter / 1000)), "warmup_s": round(timing.warmup_s, 1),
           "final_loss": round(timing.loss, 4)}
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
        row["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 3)  # with the allocator's pools
    return row | flops_columns(name, cfg, t, row["tokens_per_s"], device)


def flops_columns(name: str, cfg: Any, t: int, tokens_per_s: float, device: torch.device) -> dict[str, Any]:
    """Model FLOPs per token (rabench.flops: declared attention FLOPs + 6 per matmul weight) and MFU
    against the card's dense bf16 peak; "n/a" with the reason on a CPU or an unknown card."""
    per_token = step_flops_per_token(name, cfg, t)
    peak = card_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak is not None:
        mfu: Any = round(100 * per_token * tokens_per_s / peak[1], 1)
    else:
        mfu = "n/a (CPU)" if device.type != "cuda" else "n/a (peak unknown)"
    return {"model_gflop_per_token": round(per_token / 1e9, 4), "mfu_pct": mfu}


def add_step_ratios(rows: list[dict[str, Any]]) -> None:
    """x_sdpa_ms_per_iter: over sdpa's step at the same T and compile mode."""
    for row in rows:
        base = next((r for r in rows if r["attn"] == "sdpa" and r.get("T") == row.get("T")
                     and r.get("compiled") == row.get("compiled") and "error" not in r), None)
        if base and "error" not in row:
            row["x_sdpa_ms_per_iter"] = round(row["ms_per_iter"] / base["ms_per_iter"], 3)
