"""`rabench bench`: the plan's speed table, measured on this machine, all rows in one run.

Two tables, ratios to sdpa from the same run:
- attention alone at (B, H, T, D), bf16 on a GPU: forward and forward+backward per call,
  averaged over one module per layer of a 12-layer model (so layer-selective variants
  count their mix of layers), median of many CUDA-event-timed repetitions after warm-up;
- a full training step of the preset model (forward, backward, AdamW) per attention,
  compiled and not: ms/iter, tokens/s, peak memory.
Speed targets live here, never in unit tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from rabench import attention
from rabench.attention import AttentionSpec
from rabench.errors import RabenchError

DEFAULT_ATTNS = ["sdpa", "open", "std-gated", "ra-open", "ra-folded", "ra-triton"]
ANNEAL_PROGRESS = 1.0  # ra-anneal is timed late in training, where its multiplier has reached 0 (fast path)


def default_attns() -> list[str]:
    variants = [n for n in attention.names() if attention.entry(n).family == "ra" and n not in DEFAULT_ATTNS]
    return DEFAULT_ATTNS + variants


def time_fn(fn: Callable[[], Any], device: torch.device, reps: int = 50) -> float:
    """Median milliseconds per call after warm-up: CUDA events on a GPU, a host clock elsewhere."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=100, rep=400, return_mode="median"))
    fn()
    times = []
    for _ in range(max(3, reps // 10)):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def build_layers(name: str, h: int, d: int, n_layer: int, device: torch.device) -> list[torch.nn.Module]:
    cores = [attention.build(name, AttentionSpec(h, d, h * d, i, n_layer)).to(device) for i in range(n_layer)]
    for core in cores:
        core.set_progress(ANNEAL_PROGRESS)
        core.train()
    return cores


def bench_attention(name: str, shape: tuple[int, int, int, int], device: torch.device, n_layer: int = 12) -> dict[str, Any]:
    """Per-layer forward and forward+backward ms for one attention, mean over the layers of a model."""
    b, h, t, d = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cores = build_layers(name, h, d, n_layer, device)
    q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    x = torch.randn(b, t, h * d, device=device, dtype=dtype)
    grad_out = torch.randn(b, h, t, d, device=device, dtype=dtype)

    def forward() -> list[torch.Tensor]:
        return [core(q, k, v, x) for core in cores]

    def forward_backward() -> None:
        outs = forward()
        torch.autograd.backward(outs, [grad_out] * len(outs))

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    fwd = time_fn(forward, device) / n_layer
    fwd_bwd = time_fn(forward_backward, device) / n_layer
    row = {"attn": name, "fwd_ms": round(fwd, 4), "fwd_bwd_ms": round(fwd_bwd, 4)}
    if device.type == "cuda":
        row["peak_mem_gb_12_layers"] = round((torch.cuda.max_memory_allocated() - base) / 1e9, 3)
    return row


def bench_step(name: str, preset_name: str, compiled: bool, device: torch.device, steps: int = 20) -> dict[str, Any]:
    """One full training step (fwd, bwd, AdamW) of the preset at its default batch, median over steps."""
    from rabench.model import DEFAULT_BATCH, GPT, preset
    from rabench.training.trainer import make_optimizer
    from rabench.training.config import TrainConfig

    b, t = DEFAULT_BATCH[preset_name]
    torch.manual_seed(0)
    model = GPT(preset(preset_name), name).to(device)
    model.set_progress(ANNEAL_PROGRESS)
    opt = make_optimizer(model, TrainConfig(attn=name, data="", out="", lr=6e-4), device)
    fwd_model = torch.compile(model) if compiled else model
    idx = torch.randint(0, 50257, (b, t + 1), device=device)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            _, loss = fwd_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):  # compile, autotune, allocator warm-up: not timed
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        sync()
        t1 = time.perf_counter()
        step()
        sync()
        times.append(1000 * (time.perf_counter() - t1))
    ms = statistics.median(times)
    row = {"attn": name, "compiled": compiled, "ms_per_iter": round(ms, 3), "tokens_per_s": round(b * t / (ms / 1000)),
           "warmup_s": round(warmup_s, 1)}
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return row


def add_ratios(rows: list[dict[str, Any]], keys: tuple[str, ...], group: str | None = None) -> None:
    """ratio_<key> = row[key] / sdpa's row[key] (within the same compiled/not group)."""
    for row in rows:
        base = next((r for r in rows if r["attn"] == "sdpa" and (group is None or r[group] == row[group])), None)
        for key in keys:
            if base and row.get(key) and base.get(key):
                row[f"x_sdpa_{key}"] = round(row[key] / base[key], 3)


def machine_info(device: torch.device) -> dict[str, Any]:
    import rabench

    info = {"device": device.type, "torch": torch.__version__, "rabench": rabench.__version__, "host": platform.node()}
    if device.type == "cuda":
        import triton

        info |= {"gpu": torch.cuda.get_device_name(device), "triton": triton.__version__,
                 "cuda": torch.version.cuda}
    return info


def safely(fn: Callable[[], dict[str, Any]], name: str) -> dict[str, Any]:
    """A row that fails (out of memory, unsupported shape) is reported, not fatal to the table."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the table must survive one bad row
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"attn": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        b, h, t, d = (int(v) for v in text.split(","))
    except ValueError:
        raise RabenchError(f"--shape {text!r}: write B,H,T,D, e.g. 8,12,1024,64") from None
    return b, h, t, d


def format_tables(result: dict[str, Any]) -> str:
    lines = [f"machine: {json.dumps(result['machine'])}", f"attention shape B,H,T,D = {result['shape']}"]
    lines.append(f"{'attention':<14}{'fwd ms':>9}{'x sdpa':>8}{'fwd+bwd ms':>12}{'x sdpa':>8}")
    for r in result["attention"]:
        if "error" in r:
            lines.append(f"{r['attn']:<14}  {r['error']}")
            continue
        lines.append(f"{r['attn']:<14}{r['fwd_ms']:>9.3f}{r.get('x_sdpa_fwd_ms', float('nan')):>8.2f}"
                     f"{r['fwd_bwd_ms']:>12.3f}{r.get('x_sdpa_fwd_bwd_ms', float('nan')):>8.2f}")
    if result["steps"]:
        lines.append(f"\ntraining step, preset {result['preset']}")
        lines.append(f"{'attention':<14}{'compiled':>9}{'ms/iter':>10}{'x sdpa':>8}{'tokens/s':>11}{'peak GB':>9}")
        for r in result["steps"]:
            if "error" in r:
                lines.append(f"{r['attn']:<14}{str(r.get('compiled', '')):>9}  {r['error']}")
                continue
            lines.append(f"{r['attn']:<14}{str(r['compiled']):>9}{r['ms_per_iter']:>10.2f}"
                         f"{r.get('x_sdpa_ms_per_iter', float('nan')):>8.2f}{r['tokens_per_s']:>11,}"
                         f"{r.get('peak_mem_gb', float('nan')):>9.2f}")
    return "\n".join(lines)


def run_bench(a: argparse.Namespace) -> dict[str, Any]:
    from rabench.training.trainer import pick_device

    device = pick_device(a.device)
    names = [n.strip() for n in a.attn.split(",")] if a.attn else default_attns()
    for n in names:
        attention.entry(n)
    shape = parse_shape(a.shape)
    result: dict[str, Any] = {"machine": machine_info(device), "shape": list(shape), "preset": a.preset,
                              "timing": "attention: median ms per call per layer (CUDA events, triton do_bench) "
                                        "after warm-up; steps: median of 20 synchronised steps after 3 untimed ones",
                              "attention": [], "steps": []}
    for n in names:
        print(f"[bench] attention {n}", flush=True)
        result["attention"].append(safely(lambda: bench_attention(n, shape, device), n))
    add_ratios(result["attention"], ("fwd_ms", "fwd_bwd_ms"))
    if not a.no_steps:
        modes = {"no": [False], "yes": [True], "both": [False, True]}[a.compile]
        for compiled in modes:
            for n in names:
                print(f"[bench] step {n} compiled={compiled}", flush=True)
                row = safely(lambda: bench_step(n, a.preset, compiled, device), n)
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the model and optimizer of that row are gone now
                row.setdefault("compiled", compiled)
                result["steps"].append(row)
        add_ratios(result["steps"], ("ms_per_iter",), group="compiled")
    table = format_tables(result)
    print(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".txt").write_text(table + "\n")
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    return result
