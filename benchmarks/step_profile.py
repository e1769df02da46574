"""Where does a training step's time go?  TrainStep (gpt2-124m, B=8, T=1024, bf16) per attention
and compile mode: free-running ms/step (one sync per window, as the trainer times) and
synchronised-every-step ms/step, plus a torch.profiler summary of chosen configs: GPU time per
kernel group, the GPU's idle time per step (wall minus busy: host-bound time), and a side-by-side
table of the profiled configs (`<out>-profile.md`).

    PYTHONPATH=src python3 benchmarks/step_profile.py --attn sdpa,ra-triton \
        --modes default,reduce-overhead --profile ra-triton:default --out $OUT/steps.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from rabench.bench.step_rows import time_steps
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
    """The bench's step timing (rabench.bench.step_rows.time_steps) under this script's field names."""
    t = time_steps(step, data, torch.device("cuda"), n_free, n_sync, warm_passes=3)
    return {"free_ms": round(t.ms_per_iter, 3), "synced_ms": round(t.synced_ms, 3),
            "warmup_s": round(t.warmup_s, 1), "loss": round(t.loss, 4)}


KERNEL_GROUPS = (  # first match wins; names as CUPTI reports them on H100/H200 with PyTorch 2.11
    ("RA kernels (ours)", ("_ra_",)),  # _ra_fwd_kernel, _ra_delta_kernel, _ra_dkdv_kernel, _ra_dq_kernel
    ("SDPA / flash", ("flash", "fmha", "attention", "cudnn")),
    ("matmul", ("gemm", "sm90_xmma", "nvjet", "cutlass", "cublas")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("inductor fused (triton_*)", ("triton_",)),
)


def kernel_group(name: str) -> str:
    low = name.lower()
    return next((g for g, keys in KERNEL_GROUPS if any(k in low for k in keys)), "other")


def profile(step, data, path: str, steps: int = 3) -> dict:
    """GPU time per step by kernel and by group, the step's wall time and the GPU's idle share:
    wall minus GPU busy is time the GPU waited for the host (launches, syncs, Python).
    The profiled steps are steps 1..`steps` of a step schedule: ra-amortized's reuse steps
    (its refreshes are steps 0, every, 2 every, ...); every other attention has one path."""
    from torch.profiler import ProfilerActivity, profile as prof

    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            step.run(data, 6e-4, i)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) / steps * 1000
    ka = p.key_averages()
    with open(path, "w") as f:
        f.write(ka.table(sort_by="cuda_time_total", row_limit=30) + "\n")
        f.write(ka.table(sort_by="cpu_time_total", row_limit=25) + "\n")
    kernels = {e.key: {"per_step": e.count / steps, "us_per_step": e.self_device_time_total / steps}
               for e in ka if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0}
    groups: dict[str, dict[str, float]] = {}
    for name, k in kernels.items():
        g = groups.setdefault(kernel_group(name), {"launches": 0.0, "us": 0.0})
        g["launches"] += k["per_step"]
        g["us"] += k["us_per_step"]
    gpu_ms = sum(g["us"] for g in groups.values()) / 1000
    out = {"wall_ms_profiled": round(wall_ms, 3), "gpu_busy_ms": round(gpu_ms, 3),
           "gpu_idle_ms": round(wall_ms - gpu_ms, 3), "launches": round(sum(g["launches"] for g in groups.values())),
           "groups": {g: {"launches": round(v["launches"]), "ms": round(v["us"] / 1000, 3)} for g, v in groups.items()},
           "kernels": kernels}
    with open(path.replace(".prof.txt", ".kernels.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"  profile: {out['launches']} GPU kernels/step, GPU busy {gpu_ms:.2f} of {wall_ms:.2f} ms/step "
          f"(idle {wall_ms - gpu_ms:.2f}) -> {path}", flush=True)
    return out


def compare_profiles(profiles: dict[str, dict]) -> str:
    """Markdown table: per kernel group, launches and GPU ms per step for each profiled config,
    then busy, idle and wall: where one config's extra step time goes."""
    names = list(profiles)
    groups = sorted({g for p in profiles.values() for g in p["groups"]})
    lines = ["| group | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for g in groups:
        cells = [f"{p['groups'][g]['ms']:.3f} ms ({p['groups'][g]['launches']})" if g in p["groups"] else "-"
                 for p in profiles.values()]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    for key, label in (("gpu_busy_ms", "GPU busy"), ("gpu_idle_ms", "GPU idle (host-bound)"),
                       ("wall_ms_profiled", "step wall (profiled)")):
        lines.append(f"| {label} | " + " | ".join(f"{p[key]:.3f} ms" for p in profiles.values()) + " |")
    return "\n".join(lines) + "\n"


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
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    prof_pairs = {tuple(p.split(":")) for p in a.profile.split(",") if p}
    rows, profiles = [], {}
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
                    profiles[f"{attn} ({mode})"] = profile(step, data, a.out.replace(".json", f"-{attn}-{mode}.prof.txt"))
                del step, data
                torch.cuda.empty_cache()
                with open(a.out, "w") as f:
                    json.dump(rows, f, indent=1)
    if profiles:
        table = compare_profiles(profiles)
        with open(a.out.replace(".json", "-profile.md"), "w") as f:
            f.write(table)
        print(table, flush=True)


if __name__ == "__main__":
    main()
