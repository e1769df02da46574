"""Step-time calibration: how much slower is each config's training step than the baseline's,
on the card the suite runs on?

The iso-time design trains a candidate for round(N / s) iterations where the
baseline trains N, so s must be measured well: every config's model and optimizer are built
once (compiled if the suite is), warmed up, and then timed in windows of steps INTERLEAVED
across configs (sdpa window, ra window, ..., repeated), each window device-synchronised at both
ends. Interleaving spreads clock boosts, thermal drift and neighbours' load evenly over the
configs; rotating the order each round cancels any first-in-round effect. The ratio to the
baseline is taken per round (adjacent windows share the machine's state) and summarised on
the log scale, so the interval is symmetric in "x times slower" and "x times faster".
Every window steps through the same batches for every config and, when a config anneals
with training progress, sweeps the progress over the rounds so the mean covers a whole run.
"""

from __future__ import annotations

import gc
import json
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import rabench
from rabench.machine import machine_id
from rabench.stats import mean_ci95
from rabench.training.step import TrainStep, gpu_uuid, make_optimizer, sync

BatchFn = Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class Stepper:
    """One config ready to step: something that runs one optimizer step, given its batches and
    its index (step schedules read the index)."""

    name: str
    step: Callable[[list[tuple[torch.Tensor, torch.Tensor]], int], Any]
    warm_up: Callable[[list[tuple[torch.Tensor, torch.Tensor]]], None] = lambda _b: None
    set_progress: Callable[[float], None] = lambda _p: None


def round_order(names: list[str], r: int) -> list[str]:
    """Round r's order: the list rotated by r, so no config is always timed first."""
    k = r % len(names)
    return names[k:] + names[:k]


def time_interleaved(steppers: list[Stepper], batches: BatchFn, device: torch.device, steps: int,
                     windows: int, warmup_windows: int = 1) -> dict[str, list[float]]:
    """ms/iter of every window, per config: `windows` timed rounds after `warmup_windows` untimed ones.

    In each round every config runs `steps` optimizer steps on batches 0..steps-1 (the same
    batches for every config), between two device synchronisations, numbered on from the last
    round's (a step schedule, ra-amortized's refreshes, keeps its training mix). The timed rounds sweep the
    training progress from 0 to 1; each warm-up round visits both ends first (1, then 0), so that a
    config whose graph changes with progress (ra-anneal's fast path once its multiplier reaches 0)
    is compiled for every path before any window is timed.
    """
    names = [s.name for s in steppers]
    by_name = {s.name: s for s in steppers}
    timed: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup_windows + windows):
        warm_up = r < warmup_windows
        progress = max(0, r - warmup_windows) / max(1, windows - 1)  # 0 .. 1 over the timed rounds
        for name in round_order(names, r):
            stepper = by_name[name]
            for p in ((1.0, 0.0) if warm_up else (progress,)):
                stepper.set_progress(p)
                ms = time_window(stepper, batches, device, steps, first_step=r * steps)
            if not warm_up:
                timed[name].append(ms)
    return timed


def time_window(stepper: Stepper, batches: BatchFn, device: torch.device, steps: int, first_step: int = 0) -> float:
    """ms per optimizer step over `steps` steps on batches 0..steps-1, between two synchronisations;
    the model is told each step's index, from `first_step` on."""
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        stepper.step(batches(i), first_step + i)
    sync(device)
    return 1000.0 * (time.perf_counter() - t0) / steps


def summarise(window_ms: dict[str, list[float]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per config: mean ms/iter with its 95% interval, and the ratio to the baseline with its interval.

    The ratio is the geometric mean of the per-round ratios (window r of the config over window r
    of the baseline); its interval is the t-interval of the mean log-ratio, exponentiated.
    """
    base = window_ms[baseline]
    out: dict[str, dict[str, Any]] = {}
    for name, ms in window_ms.items():
        mean, lo, hi = mean_ci95(ms)
        logs = [math.log(m / b) for m, b in zip(ms, base)]
        if name == baseline:
            ratio, rlo, rhi = 1.0, 1.0, 1.0
        else:
            lm, llo, lhi = mean_ci95(logs)
            ratio, rlo, rhi = math.exp(lm), math.exp(llo), math.exp(lhi)
        out[name] = {"ms_per_iter": round(mean, 4), "ms_ci95": [round(lo, 4), round(hi, 4)],
                     "ratio": round(ratio, 4), "ratio_ci95": [round(rlo, 4), round(rhi, 4)],
                     "windows_ms": [round(m, 4) for m in ms]}
    return out


@dataclass(frozen=True)
class CalibrationRequest:
    """What the calibration builds and times; everything that changes a step's cost."""

    attns: list[str]
    options: dict[str, dict[str, Any]]  # resolved options per attention
    preset: str
    batch_size: int
    seq_len: int
    grad_accum: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float
    compile: bool
    compile_mode: str | None  # TrainStep's, as the trainer passes it (None: its default for `compile`)
    data: str
    seed: int
    steps: int  # optimizer steps per window
    windows: int  # timed rounds
    gate_lr_mult: float = 1.0  # a third optimizer group when not 1 (as the trainer builds it)

    def settings(self) -> dict[str, Any]:
        """The fields a reused calibration must match (see ratios.py)."""
        return {"preset": self.preset, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "grad_accum": self.grad_accum, "compile": self.compile, "compile_mode": self.compile_mode}


def build_steppers(req: CalibrationRequest, device: torch.device) -> list[Stepper]:
    """Every config's model + optimizer + TrainStep on `device`, warmed up (compilation off the clock)."""
    from rabench.model import build_model

    steppers = []
    for attn in req.attns:
        model = build_model(req.preset, attn, req.options.get(attn), req.seed).to(device)
        model.train()
        opt = make_optimizer(model, req.lr, req.weight_decay, req.betas, device, gate_lr_mult=req.gate_lr_mult)
        mode = {"compile_mode": req.compile_mode} if req.compile_mode else {}
        ts = TrainStep(model, opt, device, req.grad_clip, compile=req.compile, **mode)  # the trainer's step
        passes = 2 if req.compile else 1
        steppers.append(Stepper(attn, step=lambda b, i, ts=ts: ts.run(b, req.lr, step=i),
                                warm_up=lambda b, ts=ts: ts.warm_up(b, passes), set_progress=model.set_progress))
    return steppers


def data_batches(req: CalibrationRequest, device: torch.device) -> BatchFn:
    """Step i's micro-batches from the training data (loading is part of a timed step, as in training)."""
    from rabench.data import TokenSplit, step_batches

    split = TokenSplit(req.data, "train")
    return lambda step: step_batches(split, req.seed, step, req.batch_size, req.seq_len, req.grad_accum, device)


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def calibration_origin(device: torch.device) -> dict[str, str]:
    """The machine session, card and code that a step-time ratio holds for: calibration.json records
    them, and a later suite compares its own with them before reusing the ratios."""
    return {"machine_id": machine_id(), "card": card_name(device), "source_hash": rabench.source_hash()}


def calibrate(req: CalibrationRequest, device: torch.device, baseline: str) -> dict[str, Any]:
    """Measure every config's step time on `device`; returns calibration.json's record."""
    if baseline not in req.attns:
        raise ValueError(f"calibration needs the baseline {baseline!r} among {req.attns}")
    batches = data_batches(req, device)
    steppers = build_steppers(req, device)
    warm = batches(0)
    for s in steppers:  # compilation and autotuning off the clock, weights untouched
        s.warm_up(warm)
    window_ms = time_interleaved(steppers, batches, device, req.steps, req.windows)
    del steppers
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        **calibration_origin(device),  # a reuse is refused on another origin (see ratios.py)
        "gpu_uuid": gpu_uuid(device),
        "host": socket.gethostname(),
        "device": str(device),
        "compiled": req.compile,
        "baseline": baseline,
        "steps_per_window": req.steps,
        "windows": req.windows,
        "settings": req.settings(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "configs": summarise(window_ms, baseline),
    }


# ---- as a worker process (rabench suite --devices: the calibration holds one GPU while
# ---- the runs that need no step ratio train on the others) ------------------------------
def request_from_json(text: str) -> CalibrationRequest:
    fields = json.loads(text)
    fields["betas"] = tuple(fields["betas"])
    return CalibrationRequest(**fields)


def worker_main(argv: list[str]) -> int:
    """`python -m rabench.suite.worker calibrate REQUEST_JSON BASELINE OUT_FILE`: calibrate on this
    process's device (its one visible GPU, else the CPU) and write the record to OUT_FILE."""
    from pathlib import Path

    from rabench.fileio import write_json_atomic

    text, baseline, out_file = argv[:3]
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    record = calibrate(request_from_json(text), device, baseline)
    write_json_atomic(Path(out_file), record, "calibration", default=str)
    return 0
