"""Where does eager ra_attention's host time go? cProfile of fwd+bwd calls at the GPT-2 shape.

Usage on a GPU machine: PYTHONPATH=src python3 benchmarks/host_overhead_profile.py [--iters N]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from rabench.kernels import ra_attention


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    b, h, t, d = 8, 12, 1024, 64
    mk = lambda: torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)  # noqa: E731
    q1, k1, q2, k2, v = mk(), mk(), mk(), mk(), mk()
    bias = torch.randn(b, h, t, device="cuda", requires_grad=True)
    go = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        ra_attention(q1, k1, q2, k2, v, bias).backward(go)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    host = (time.perf_counter() - t0) / a.iters
    torch.cuda.synchronize()
    print(f"host time per fwd+bwd call (queued, no sync): {1000 * host:.3f} ms")
    if a.no_profile:
        return
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(a.iters):
        step()
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
