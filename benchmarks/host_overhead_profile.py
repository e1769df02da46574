"""Where does an eager attention module's host time go? The bench's host-inclusive clock and a
cProfile of forward+backward, at the GPT-2 shape, as `rabench bench` times it (12 layers, q, k, v
views of one qkv projection, bf16).

Usage on a GPU machine:
    PYTHONPATH=src python3 benchmarks/host_overhead_profile.py [--attn ra-triton,sdpa] [--iters N]

Prints per attention: host-inclusive ms per layer (synchronised, what a user's eager loop pays),
the host-only ms per layer (launches queued, no sync: the CPU's own cost), and the top cProfile
entries of the first attention by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from rabench.bench.attention_rows import build_layers
from rabench.bench.timing import host_ms

SHAPE = (8, 12, 1024, 64)  # B, H, T, D: GPT-2 124M at batch 8


def layer_step(name: str, n_layer: int):
    """One forward+backward of n_layer cores of `name` on q, k, v views of a qkv projection."""
    b, h, t, d = SHAPE
    c = h * d
    dev = torch.device("cuda")
    cores = build_layers(name, h, d, n_layer, dev)
    qkv = torch.randn(b, t, 3 * c, device=dev, dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in qkv.split(c, dim=2))
    x = torch.randn(b, t, c, device=dev, dtype=torch.bfloat16)
    go = torch.randn(b, h, t, d, device=dev, dtype=torch.bfloat16)

    def step() -> None:
        outs = [core(q, k, v, x) for core in cores]
        torch.autograd.backward(outs, [go] * len(outs))

    return step


def queued_ms(step, iters: int) -> float:
    """Host time with the launches queued and no synchronisation inside the loop."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    ms = 1000 * (time.perf_counter() - t0) / iters
    torch.cuda.synchronize()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="ra-triton,sdpa", help="comma-separated attentions")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--top", type=int, default=30, help="cProfile rows printed")
    a = ap.parse_args()
    names = a.attn.split(",")
    dev = torch.device("cuda")
    steps = {}
    for name in names:
        steps[name] = layer_step(name, a.layers)
        for _ in range(3):
            steps[name]()  # autotune and compile caches warm
    torch.cuda.synchronize()
    for name in names:
        incl = host_ms(steps[name], dev) / a.layers
        only = queued_ms(steps[name], a.iters) / a.layers
        print(f"{name:>14}: host-inclusive {incl:.3f} ms/layer, host-only (queued) {only:.3f} ms/layer")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(a.iters):
        steps[names[0]]()
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof)
    print(f"\n== {names[0]}: {a.iters} steps x {a.layers} layers, by own time")
    stats.sort_stats("tottime").print_stats(a.top)
    print(f"\n== {names[0]}: by cumulative time")
    stats.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
