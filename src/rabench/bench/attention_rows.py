"""Attention alone: forward and forward+backward per layer, GPU-only and host-inclusive.

Each attention runs as the model runs it: q, k, v are views of one (B, T, 3C) projection
output, one core per layer of a 12-layer model (so layer-selective variants count their mix
of layers), bf16 on a GPU.  SDPA is timed with PyTorch's default choice and with each backend
forced; the best backend is reported beside the default.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from rabench import attention
from rabench.attention import AttentionSpec
from rabench.bench.timing import gpu_ms, host_ms

ANNEAL_PROGRESS = 1.0  # ra-anneal is timed late in training, where its multiplier has reached 0 (fast path)
REUSE_STEP = 1  # a step schedule is timed off its refresh steps (ra-amortized: the cached pattern's path)
SDPA_BACKENDS = ("flash", "cudnn", "efficient")


def build_layers(name: str, h: int, d: int, n_layer: int, device: torch.device) -> list[torch.nn.Module]:
    cores = [attention.build(name, AttentionSpec(h, d, h * d, i, n_layer)).to(device) for i in range(n_layer)]
    for core in cores:
        core.set_progress(ANNEAL_PROGRESS)
        core.set_step(REUSE_STEP)  # the first call still refreshes: nothing is cached yet
        core.train()
    return cores


def sdpa_backend(name: str) -> contextlib.AbstractContextManager:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION}[name])


def attention_row(name: str, shape: tuple[int, int, int, int], device: torch.device, n_layer: int = 12,
                  backend: str | None = None) -> dict[str, Any]:
    """Per-layer ms (gpu_ms and host_ms, forward and forward+backward) for one attention."""
    b, h, t, d = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cores = build_layers(name, h, d, n_layer, device)
    c = h * d
    qkv = torch.randn(b, t, 3 * c, device=device, dtype=dtype, requires_grad=True)
    q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in qkv.split(c, dim=2))
    x = torch.randn(b, t, c, device=device, dtype=dtype)
    grad_out = torch.randn(b, h, t, d, device=device, dtype=dtype)
    ctx: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: sdpa_backend(backend)) if backend else contextlib.nullcontext)

    def forward() -> list[torch.Tensor]:
        with ctx():
            return [core(q, k, v, x) for core in cores]

    def forward_backward() -> None:
        outs = forward()
        with ctx():
            torch.autograd.backward(outs, [grad_out] * len(outs))  # gates, u and q, k, v

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    row: dict[str, Any] = {"attn": name if backend is None else f"{name}[{backend}]", "T": t, "B": b}
    with torch.no_grad():
        row["fwd_host_ms"] = round(host_ms(forward, device) / n_layer, 4)
    row["fwd_bwd_host_ms"] = round(host_ms(forward_backward, device) / n_layer, 4)
    try:  # one clock failing must not cost the row the other
        with torch.no_grad():
            row["fwd_gpu_ms"] = round(gpu_ms(forward, device) / n_layer, 4)
        row["fwd_bwd_gpu_ms"] = round(gpu_ms(forward_backward, device) / n_layer, 4)
    except Exception as exc:  # noqa: BLE001
        row["gpu_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    if device.type == "cuda":
        row["peak_mem_gb_12_layers"] = round((torch.cuda.max_memory_allocated() - base) / 1e9, 3)
    return row


def add_attention_ratios(rows: list[dict[str, Any]]) -> None:
    """x_sdpa_<key>: over default sdpa at the same T; x_best_sdpa_<key>: over the fastest SDPA
    backend at the same T (per key)."""
    keys = ("fwd_gpu_ms", "fwd_host_ms", "fwd_bwd_gpu_ms", "fwd_bwd_host_ms")
    for row in rows:
        if "error" in row:
            continue
        peers = [r for r in rows if r.get("T") == row["T"] and "error" not in r]
        default = next((r for r in peers if r["attn"] == "sdpa"), None)
        sdpas = [r for r in peers if r["attn"] == "sdpa" or r["attn"].startswith("sdpa[")]
        for key in keys:
            if key not in row:
                continue
            if default and default.get(key):
                row[f"x_sdpa_{key}"] = round(row[key] / default[key], 3)
            if any(key in r for r in sdpas):
                best = min(r[key] for r in sdpas if key in r)
                row[f"x_best_sdpa_{key}"] = round(row[key] / best, 3)
