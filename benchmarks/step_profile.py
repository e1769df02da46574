"""Where does a training step's time go?  TrainStep (gpt2-124m, B=8, T=1024, bf16) per attention
and compile mode: free-running ms/step (one sync per window, as the trainer times) and
synchronised-every-step ms/step, plus a torch.profiler summary of chosen configs.

    PYTHONPATH=src python3 benchmarks/step_profile.py --attn sdpa,ra-triton \
        --modes default,reduce-overhead --profile ra-triton:default --out $OUT/steps.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rabench.model import GPT, preset
from rabench.training.step import TrainStep, make_optimizer


def build(attn: str, mode: str, copt: bool, b: int, t: int):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = GPT(preset("gpt2-124m"), attn).to(dev)
    model.set_progress(1.0)
    opt = make_optimizer(model, 6e-4, 0.1, (0.9, 0.95), dev, impl="foreach" if copt else "fused")
    step = TrainStep(model, opt, dev, 1.0, compile_mode=mode, compile_optimizer=copt)
    idx = torch.randint(0, 50257, (b, t + 1), device=dev)
    return step, [(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())]


def measure(step, data, n_free: int = 30, n_sync: int = 10) -> dict:
    t0 = time.perf_counter()
    step.warm_up(data, 3)
    for _ in range(3):
        step.run(data, 6e-4)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_free):
        loss = step.run(data, 6e-4)
    torch.cuda.synchronize()
    free = (time.perf_counter() - t0) / n_free * 1000
    times = []
    for _ in range(n_sync):
        t1 = time.perf_counter()
        step.run(data, 6e-4)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t1) * 1000)
    times.sort()
    return {"free_ms": round(free, 3), "synced_ms": round(times[len(times) // 2], 3),
            "warmup_s": round(warm, 1), "loss": round(loss.item(), 4)}


def profile(step, data, path: str) -> None:
    from torch.profiler import ProfilerActivity, profile as prof

    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            step.run(data, 6e-4)
        torch.cuda.synchronize()
    ka = p.key_averages()
    with open(path, "w") as f:
        f.write(ka.table(sort_by="cuda_time_total", row_limit=30) + "\n")
        f.write(ka.table(sort_by="cpu_time_total", row_limit=25) + "\n")
    n_kern = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    gpu_us = sum(e.self_device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"  profile: {n_kern / 3:.0f} GPU kernels/step, GPU busy {gpu_us / 3 / 1000:.2f} ms/step -> {path}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attn", default="sdpa,ra-triton")
    ap.add_argument("--modes", default="default,reduce-overhead")
    ap.add_argument("--copt", default="", help="modes that also get a compiled-optimizer row")
    ap.add_argument("--profile", default="", help="attn:mode pairs to profile, comma-separated")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--out", default="steps.json")
    a = ap.parse_args()
    prof_pairs = {tuple(p.split(":")) for p in a.profile.split(",") if p}
    rows = []
    for attn in a.attn.split(","):
        for mode in a.modes.split(","):
            for copt in ([False, True] if mode in a.copt.split(",") else [False]):
                torch._dynamo.reset()
                step, data = build(attn, mode, copt, a.batch, a.seq)
                row = {"attn": attn, "mode": mode, "compiled_opt": copt, **measure(step, data)}
                row["tok_s_free"] = round(a.batch * a.seq / row["free_ms"] * 1000)
                print(json.dumps(row), flush=True)
                rows.append(row)
                if (attn, mode) in prof_pairs and not copt:
                    profile(step, data, a.out.replace(".json", f"-{attn}-{mode}.prof.txt"))
                del step, data
                torch.cuda.empty_cache()
                with open(a.out, "w") as f:
                    json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
