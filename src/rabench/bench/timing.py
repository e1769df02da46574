"""The two clocks of `rabench bench`.

gpu_ms:  the callable captured once in a CUDA graph and replayed (triton's do_bench_cudagraph,
         median): device time only, no launch cost.  What the kernels cost.
host_ms: the callable called `reps` times back to back, one synchronisation at the end, wall
         time per call: whatever is slower, the host issuing launches or the device running
         them.  What a training loop that never waits on the host sees.
On a CPU both are the host clock (median of a few calls).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_ms(fn: Callable[[], Any], device: torch.device, reps: int = 30) -> float:
    fn()
    sync(device)
    if device.type != "cuda":
        times = []
        for _ in range(max(3, reps // 10)):
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - t0) / reps


def gpu_ms(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type != "cuda":
        return host_ms(fn, device)
    from triton.testing import do_bench_cudagraph

    fn()  # autotuning and lazy allocations happen outside the capture
    torch.cuda.synchronize()
    return float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
