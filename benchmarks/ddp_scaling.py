"""Weak scaling of data-parallel training: 1, 2, 4 GPUs of one node, the same micro-batch per GPU.

For each attention and GPU count this launches `torchrun --standalone --nproc_per_node N` on this
script's worker, which times the trainer's own step (TrainStep inside distributed.wrap_ddp, so
--compile-mode and the --ddp-* settings mean what they mean to `rabench train`) and profiles a few
steps with torch.profiler. It prints, per row:

  tokens/s     all ranks together (B x T x N per step over the slowest rank's step time)
  efficiency   tokens/s over N x the same attention's 1-GPU tokens/s
  exposed      all-reduce time per step not hidden behind computation: the union of NCCL kernel
               intervals minus its overlap with the union of all other kernels, on rank 0's GPU
  x sdpa       the step-time ratio to sdpa at the same GPU count (RA's cost under DDP vs on one GPU)

With --check-data it also runs the equivalence check through the CLI: `rabench train` on N ranks
with --grad-accum 1 against 1 process with --grad-accum N (the same rows per step), and prints
both val losses. A benchmark, not a test: run it on a GPU node, e.g.

    PYTHONPATH=src python benchmarks/ddp_scaling.py --attn sdpa,ra-triton --gpus 1,2,4 --compile-mode default \\
        --out results/bench/ddp-scaling --check-data data/fineweb10B --check-iters 200

The rows go to <out>/scaling.json, a markdown table to <out>/scaling.md, each worker's profiler
summary to <out>/<attn>-<N>gpu.prof.txt. On a CPU (--device cpu, gloo) it runs the same way on
the tiny preset, as a smoke test of the script: CPU tokens/s answer nothing, and there is no exposed time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
LR = 6e-4


# ---- the worker: one rank of one configuration ---------------------------------------------------
def worker(a: argparse.Namespace) -> None:
    from rabench.model import build_model
    from rabench.training import TrainConfig
    from rabench.training import distributed as dd
    from rabench.training.step import TrainStep, make_optimizer, sync

    device_type = "cuda" if a.device == "cuda" else "cpu"
    info = dd.init_distributed(device_type)
    device = torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")
    cfg = TrainConfig(attn=a.attn, data="-", out="-", preset=a.preset, max_iters=1, compile=a.compile_mode != "none",
                      compile_mode=a.compile_mode, ddp_bucket_cap_mb=a.ddp_bucket_cap_mb,
                      ddp_grad_as_bucket_view=a.ddp_grad_as_bucket_view, ddp_static_graph=a.ddp_static_graph,
                      ddp_comm_hook=a.ddp_comm_hook)
    model = build_model(a.preset, a.attn, {}, seed=0).to(device)
    model.set_progress(1.0)
    optimizer = make_optimizer(model, LR, 0.1, (0.9, 0.95), device)
    if info.enabled:
        step = TrainStep(model, optimizer, device, 1.0, ddp_model=dd.wrap_ddp(model, device, info, cfg),
                         compile_mode=a.compile_mode)
    else:  # one GPU: the trainer's single-process step, no DDP wrapper
        step = TrainStep(model, optimizer, device, 1.0, compile_mode=a.compile_mode)
    gen = torch.Generator().manual_seed(1000 + info.rank)  # each rank its own rows, as in training
    idx = torch.randint(0, model.cfg.vocab_size, (a.batch, a.seq + 1), generator=gen).to(device)
    batches = [(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())]

    step.warm_up(batches, 3 if a.compile_mode != "none" else 1)
    for i in range(3):
        step.run(batches, LR, i)
    sync(device)
    dd.barrier(info)
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step.run(batches, LR, 3 + i)
    sync(device)
    _, seconds = dd.step_stats(float(loss), time.perf_counter() - t0, info, device)  # the slowest rank
    ms = 1000 * seconds / a.steps
    comm = profile_comm(step, batches, a, info) if device_type == "cuda" else {}
    if info.is_main:
        row = {"attn": a.attn, "gpus": info.world_size, "batch_per_gpu": a.batch, "seq": a.seq,
               "compile_mode": a.compile_mode, "ddp": {k: getattr(cfg, k) for k in DDP_FIELDS},
               "ms_per_step": round(ms, 3), "tokens_per_s": round(a.batch * a.seq * info.world_size / ms * 1000),
               "device": torch.cuda.get_device_name(device) if device_type == "cuda" else "cpu", **comm}
        Path(a.row_out).write_text(json.dumps(row))


DDP_FIELDS = ("ddp_bucket_cap_mb", "ddp_grad_as_bucket_view", "ddp_static_graph", "ddp_comm_hook")


def profile_comm(step, batches, a: argparse.Namespace, info) -> dict:
    """Rank 0's GPU kernels over a few steps: NCCL time, and the part of it no other kernel overlaps."""
    from torch.profiler import ProfilerActivity, profile

    from rabench.training.step import sync

    device = batches[0][0].device
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(a.profile_steps):
            step.run(batches, LR, 100 + i)
        sync(device)
    if not info.is_main:
        return {}
    trace = Path(a.row_out).with_suffix(".trace.json")
    prof.export_chrome_trace(str(trace))
    Path(a.row_out).with_suffix(".prof.txt").write_text(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    comm, exposed = comm_times_us(json.loads(trace.read_text()).get("traceEvents", []))
    trace.unlink()  # tens of MB; the summary and the numbers stay
    return {"allreduce_ms_per_step": round(comm / 1000 / a.profile_steps, 3),
            "exposed_allreduce_ms_per_step": round(exposed / 1000 / a.profile_steps, 3)}


def comm_times_us(events: list[dict]) -> tuple[float, float]:
    """(NCCL kernel time, the part of it during which no other kernel ran), in microseconds."""
    nccl, compute = [], []
    for e in events:
        if e.get("cat") != "kernel" or "dur" not in e:
            continue
        span = (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        (nccl if "nccl" in e.get("name", "").lower() else compute).append(span)
    comm = merge(nccl)
    busy = merge(compute)
    return length(comm), length(comm) - overlap(comm, busy)


def merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def length(spans: list[tuple[float, float]]) -> float:
    return sum(hi - lo for lo, hi in spans)


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total overlap of two merged, sorted interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


# ---- the launcher ---------------------------------------------------------------------------------
def launch(a: argparse.Namespace, attn: str, n: int, out: Path) -> dict:
    row_out = out / f"{attn}-{n}gpu.json"
    args = ["--worker", "--attn", attn, "--device", a.device, "--preset", a.preset, "--batch", str(a.batch),
            "--seq", str(a.seq), "--steps", str(a.steps), "--profile-steps", str(a.profile_steps),
            "--compile-mode", a.compile_mode, "--ddp-bucket-cap-mb", str(a.ddp_bucket_cap_mb),
            "--ddp-comm-hook", a.ddp_comm_hook, "--row-out", str(row_out)]
    args += ["--ddp-grad-as-bucket-view"] * a.ddp_grad_as_bucket_view + ["--ddp-static-graph"] * a.ddp_static_graph
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), __file__, *args]
    subprocess.run(cmd, check=True, env=child_env(a))
    return json.loads(row_out.read_text())


def child_env(a: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if a.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def table(rows: list[dict]) -> str:
    one = {r["attn"]: r["tokens_per_s"] for r in rows if r["gpus"] == 1}
    sdpa = {r["gpus"]: r["ms_per_step"] for r in rows if r["attn"] == "sdpa"}
    lines = ["| attention | GPUs | ms/step | tokens/s | efficiency | all-reduce ms/step | exposed ms/step | x sdpa |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        eff = r["tokens_per_s"] / (r["gpus"] * one[r["attn"]]) if r["attn"] in one else None
        ratio = r["ms_per_step"] / sdpa[r["gpus"]] if r["gpus"] in sdpa else None
        cells = [r["attn"], r["gpus"], f"{r['ms_per_step']:.2f}", f"{r['tokens_per_s']:,}", fmt(eff, ".2f"),
                 fmt(r.get("allreduce_ms_per_step"), ".2f"), fmt(r.get("exposed_allreduce_ms_per_step"), ".2f"),
                 fmt(ratio, ".3f")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def equivalence(a: argparse.Namespace, n: int, out: Path) -> str:
    """`rabench train` on n ranks x accumulation 1 against 1 process x accumulation n: final val losses."""
    base = ["-m", "rabench", "train", "--attn", "sdpa", "--data", a.check_data, "--iters", str(a.check_iters),
            "--device", a.device, "--preset", a.preset, "--batch-size", str(a.batch), "--seq-len", str(a.seq),
            "--no-progress"] + (["--compile-mode", a.compile_mode] if a.compile_mode != "none" else [])
    runs = {f"{n} ranks x accum 1": (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)],
                                     ["--grad-accum", "1"]),
            f"1 rank x accum {n}": ([], ["--grad-accum", str(n)])}
    losses = {}
    for name, (launcher, accum) in runs.items():
        run_dir = out / ("check-" + name.replace(" ", ""))
        subprocess.run([sys.executable, *launcher, *base, *accum, "--out", str(run_dir)], check=True, env=child_env(a))
        losses[name] = json.loads((run_dir / "summary.json").read_text())["final_val_loss"]
    (first, x), (second, y) = losses.items()
    return (f"equivalence after {a.check_iters} steps: val_loss {x:.5f} ({first}) vs {y:.5f} ({second}), "
            f"difference {abs(x - y):.2e} (bf16 autocast: expect about 1e-3 or less)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="sdpa,ra-triton")
    ap.add_argument("--gpus", default="1,2,4", help="process counts (default: 1,2,4)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--preset", default=None, help="default: gpt2-124m on cuda, tiny on cpu")
    ap.add_argument("--batch", type=int, default=8, help="sequences per GPU per step (default: 8)")
    ap.add_argument("--seq", type=int, default=None, help="default: 1024 on cuda, 64 on cpu")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (default: 30)")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--compile-mode", default="default", help="none, default, reduce-overhead, ...")
    ap.add_argument("--ddp-bucket-cap-mb", type=float, default=25.0)
    ap.add_argument("--ddp-grad-as-bucket-view", action="store_true")
    ap.add_argument("--ddp-static-graph", action="store_true")
    ap.add_argument("--ddp-comm-hook", default="none", choices=("none", "bf16"))
    ap.add_argument("--check-data", default=None, help="prepared data: also run the equivalence check")
    ap.add_argument("--check-iters", type=int, default=200)
    ap.add_argument("--out", default="ddp-scaling")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    cpu = a.device == "cpu"
    a.preset = a.preset or ("tiny" if cpu else "gpt2-124m")
    a.seq = a.seq or (64 if cpu else 1024)
    if a.worker:
        worker(a)
        if dist.is_initialized():
            dist.destroy_process_group()
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in a.gpus.split(",")]
    if not cpu and max(counts) > torch.cuda.device_count():
        sys.exit(f"ddp_scaling: --gpus asks for {max(counts)} GPUs; this node has {torch.cuda.device_count()}")
    rows = []
    for attn in a.attn.split(","):
        for n in counts:
            rows.append(launch(a, attn, n, out))
            print(json.dumps(rows[-1]), flush=True)
            (out / "scaling.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    if a.check_data:
        text += "\n\n" + equivalence(a, max(counts), out)
    header = (f"{rows[0]['device']}, {a.batch} x {a.seq} tokens per GPU per step, compile mode {a.compile_mode}, "
              f"{a.steps} timed steps; command: {' '.join(sys.argv)}\n\n")
    (out / "scaling.md").write_text(header + text + "\n")
    print(header + text)


if __name__ == "__main__":
    main()
