"""The two clocks of `rabench bench`.

gpu_ms:  the device time of the kernels the callable launches, summed from the CUDA profiler's
         (CUPTI) kernel records over several calls: device work only, no launch gaps.  What the
         kernels cost.  (A CUDA-graph replay would measure the same thing, but capturing these
         modules' autograd backward failed on the H100 with torch 2.11 - "operation failed due
         to a previous error during capture" - and a failed capture breaks every later one in
         the process; the profiler needs no capture.)
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

from rabench.training.step import sync



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


def gpu_ms(fn: Callable[[], Any], device: torch.device, reps: int = 10) -> float:
    if device.type != "cuda":
        return host_ms(fn, device)
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()  # autotuning and lazy allocations stay out of the record
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == DeviceType.CUDA)
    if total_us <= 0:
        raise RuntimeError("the CUDA profiler recorded no kernels")
    return total_us / 1000 / reps
