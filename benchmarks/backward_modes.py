"""The RA kernel's two backwards against cuDNN: forward+backward GPU time, and their agreement.

    PYTHONPATH=src python3 benchmarks/backward_modes.py [--lengths 1024,2048,4096] [--tune-forward]
    TRITON_INTERPRET=1 PYTHONPATH=src python3 benchmarks/backward_modes.py --dry-run   # CPU

One process, one GPU.  For each T at B*T = 8192 tokens (B = 8, 4, 2 for T = 1024, 2048, 4096),
H = 12, D = 64, bf16, with q, k, v views of one (B, T, 3C) projection (the model's layout), it
times forward+backward (the gradients of every input, as torch.autograd.grad returns them) of
    cudnn   torch SDPA forced to the cuDNN backend, is_causal
    norec   the kernel as ra-norec calls it: per-head scale on q, bias vector u, no reciprocal term
    ra      the kernel as ra-triton calls it: canonical RA, the pair tied, both scales, vector u
each of ours with the backward forced to two-pass and to one-pass (tuning.force_backward), on
rabench.bench.timing.gpu_ms (the CUDA profiler's kernel records summed over calls: device work
only, no launch gaps; `rabench bench` times attention rows with the same clock).  At the first
length it also prints each route's largest kernels (GPU ms per call).  It prints a
markdown table of ms and ratios to cudnn, then the largest absolute difference between the two
modes' gradients of every input, beside that gradient's largest magnitude (the one-pass sums in
another order: bf16 rounding of the results, not more, may differ).  Exit status 1 when a
difference exceeds 2% of the gradient's scale or a result is not finite.

The forward is the same kernel in both modes; by default it is pinned to one config
(FORWARD_CONFIG); --tune-forward autotunes it as training does.  The backward kernels autotune
over their lists in tuning.CONFIGS.  Every candidate is a compile of several seconds, one after
another inside the autotuner, so worker processes first compile them all in parallel
(prewarm); Triton's on-disk cache then hands the autotuner the binaries (--no-prewarm: off).
Writes $OUT/backward_modes.json when $OUT is set.
--dry-run: a tiny float32 shape on the CPU through Triton's interpreter (set TRITON_INTERPRET=1),
default SDPA backend, host clock: checks the script's plumbing, not the card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from rabench.bench.timing import gpu_ms
from rabench.kernels import op as kop, tuning
from rabench.kernels import ra_attention

FORWARD_CONFIG = (128, 64, 4, 3)  # (BLOCK_M, BLOCK_N, warps, stages): tuning.CONFIGS' first, v2's pick
TOKENS = 8192
AGREE_TOL = 0.02  # max |one-pass - two-pass| over max |gradient|, per input
MODES = ("two-pass", "one-pass")


def log(*a) -> None:
    print(*a, flush=True)


class Case:
    """One shape's inputs: a (B, T, 3C) projection whose views are q, k, v; the gates as the
    per-head scales s1 = w_std c, s2 = w_rec c and the bias vector w_disc u (ra-math.md)."""

    def __init__(self, B: int, T: int, H: int, D: int, dtype: torch.dtype, dev: torch.device, seed: int):
        g = torch.Generator(device=dev).manual_seed(seed)
        C = H * D
        self.qkv = torch.randn(B, T, 3 * C, device=dev, generator=g).to(dtype).requires_grad_()
        self.q, self.k, self.v = (z.view(B, T, H, D).transpose(1, 2) for z in self.qkv.split(C, dim=2))
        w_std, w_rec, w_disc = torch.softmax(torch.tensor([2.2, 0.6, 0.1]), 0).tolist()
        c = D ** -0.5
        self.s1 = torch.full((H,), w_std * c, device=dev).requires_grad_()
        self.s2 = torch.full((H,), w_rec * c, device=dev).requires_grad_()
        self.u = (torch.randn(H, D, device=dev, generator=g) * (w_disc * D ** -0.5)).requires_grad_()
        self.do = torch.randn(B, H, T, D, device=dev, generator=g).to(dtype)


def routes(x: Case, cudnn: bool) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.Tensor]]]:
    """name -> (forward, the leaves its backward differentiates)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa() -> torch.Tensor:
        if not cudnn:  # the dry run: whatever backend the CPU has
            return F.scaled_dot_product_attention(x.q, x.k, x.v, is_causal=True)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(x.q, x.k, x.v, is_causal=True)

    return {
        "cudnn": (sdpa, [x.qkv]),
        "norec": (lambda: ra_attention(x.q, x.k, None, None, x.v, x.u, scale1=x.s1), [x.qkv, x.u, x.s1]),
        "ra": (lambda: ra_attention(x.q, x.k, None, None, x.v, x.u, scale1=x.s1, scale2=x.s2, tied=True),
               [x.qkv, x.u, x.s1, x.s2]),
    }


def fwd_bwd(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor], do: torch.Tensor):
    return torch.autograd.grad(forward(), leaves, do)


def kernel_breakdown(fn: Callable[[], object], reps: int = 5) -> list[tuple[str, float]]:
    """(kernel name, GPU ms per call) of one already-warm callable, largest first: where a
    route's time goes (the one-pass kernel against dkdv + dq, the fills and casts around them)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key[:70], e.self_device_time_total / 1000 / reps) for e in prof.key_averages()
            if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


def _compile_candidate(job: tuple[str, tuple, tuple, str]) -> str:
    """Worker process: run both of our routes once, on a small shape, with kernel `name` pinned to
    `cfg` and every other kernel to a fixed config, so exactly that binary lands in Triton's
    on-disk cache (the same kernel, constexprs and options as the autotuner's launch)."""
    name, cfg, fwd_cfg, device = job
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    small = tuning.CONFIGS["small"]
    for n in ("dkdv", "dq", "onepass"):
        tuning.force_config(n, small[n][0])
    tuning.force_config("fwd", fwd_cfg)
    tuning.force_config(name, cfg)
    tuning.force_backward("two-pass" if name in ("dkdv", "dq") else "one-pass")
    H, D = (12, 64) if dev.type == "cuda" else (2, 16)
    try:  # a failure here only costs the main process that compile; it reports it there
        x = Case(1, 256 if dev.type == "cuda" else 32, H, D, dtype, dev, seed=0)
        for route in ("norec", "ra"):
            forward, leaves = routes(x, cudnn=False)[route]
            fwd_bwd(forward, leaves, x.do)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return f"{name} {cfg}: not compiled ({type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''})"
    return f"{name} {cfg}"


def prewarm(device: str, tune_forward: bool, workers: int, per_kernel: int = 0) -> None:
    """Compile every autotune candidate of the small head-dim class (the first `per_kernel` of
    each kernel's list when given: the dry run's check of the plumbing) in `workers` processes."""
    import concurrent.futures
    import multiprocessing

    small = tuning.CONFIGS["small"]
    names = ("dkdv", "dq", "onepass") + (("fwd",) if tune_forward else ())
    jobs = [(n, c, None if n == "fwd" else FORWARD_CONFIG if not tune_forward else small["fwd"][0], device)
            for n in names for c in small[n][:per_kernel or None]]
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")  # CUDA does not survive fork
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for done in pool.map(_compile_candidate, jobs):
            log(f"[prewarm] {done}")
    log(f"[prewarm] {len(jobs)} candidates in {time.time() - t0:.0f} s ({workers} processes)")


def run_shape(T: int, H: int, D: int, dtype: torch.dtype, dev: torch.device, cudnn: bool, B: int,
              breakdown: bool) -> dict:
    x = Case(B, T, H, D, dtype, dev, seed=T)
    row: dict = {"T": T, "B": B, "ms": {}, "agreement": {}, "kernels": {}}
    grads: dict[tuple[str, str], tuple] = {}
    for name, (forward, leaves) in routes(x, cudnn).items():
        for mode in (MODES if name != "cudnn" else (None,)):
            tuning.force_backward(mode)
            label = name if mode is None else f"{name} {mode}"
            t0 = time.time()
            row["ms"][label] = gpu_ms(lambda: fwd_bwd(forward, leaves, x.do), dev)
            if mode is not None:
                grads[name, mode] = fwd_bwd(forward, leaves, x.do)
            log(f"[time] T={T} {label:18s} {row['ms'][label]:.4f} ms   (incl. tuning {time.time() - t0:.0f} s)")
            if breakdown:
                rows = kernel_breakdown(lambda: fwd_bwd(forward, leaves, x.do))
                row["kernels"][label] = rows
                log("    " + "; ".join(f"{ms:.3f} {k}" for k, ms in rows[:6]))
    tuning.force_backward(None)
    for name in ("norec", "ra"):
        names = ["qkv", "u", "s1", "s2"][:len(grads[name, MODES[0]])]
        for n, a, b in zip(names, grads[name, "two-pass"], grads[name, "one-pass"]):
            diff = (a.float() - b.float()).abs().max().item()
            scale = b.float().abs().max().item()
            finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
            ok = finite and diff <= AGREE_TOL * max(scale, 1e-12)
            row["agreement"][f"{name} d{n}"] = dict(max_abs_diff=diff, max_abs=scale, ok=ok)
    return row


def table(rows: list[dict]) -> None:
    labels = list(rows[0]["ms"])
    log("\n| T (B) | " + " | ".join(f"{lb} ms" for lb in labels) + " | "
        + " | ".join(f"{lb} / cudnn" for lb in labels if lb != "cudnn") + " |")
    log("| --- " * (2 * len(labels)) + "|")
    for r in rows:
        ms = r["ms"]
        log(f"| {r['T']} ({r['B']}) | " + " | ".join(f"{ms[lb]:.3f}" for lb in labels) + " | "
            + " | ".join(f"{ms[lb] / ms['cudnn']:.2f}x" for lb in labels if lb != "cudnn") + " |")
    log("\n| T | gradient | max abs(one-pass - two-pass) | max abs gradient | ok |")
    log("| --- | --- | ---: | ---: | --- |")
    for r in rows:
        for k, a in r["agreement"].items():
            log(f"| {r['T']} | {k} | {a['max_abs_diff']:.3e} | {a['max_abs']:.3e} | {'OK' if a['ok'] else 'FAIL'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1024,2048,4096", help="sequence lengths T (B = 8192 / T)")
    ap.add_argument("--tune-forward", action="store_true", help="autotune the forward too (more compiles)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shape: the plumbing only")
    ap.add_argument("--no-prewarm", action="store_true", help="let the autotuner compile one config at a time")
    args = ap.parse_args()
    if args.dry_run:
        ok, why = kop.ra_attention_available()
        if not ok or torch.cuda.is_available():
            sys.exit(f"--dry-run runs on a CPU under TRITON_INTERPRET=1 ({why or 'a GPU is present'})")
        dev, dtype, H, D, lengths, tokens = torch.device("cpu"), torch.float32, 2, 16, [40], 80
    else:
        if not torch.cuda.is_available():
            sys.exit("needs a CUDA GPU (or --dry-run under TRITON_INTERPRET=1)")
        dev, dtype, H, D, tokens = torch.device("cuda"), torch.bfloat16, 12, 64, TOKENS
        lengths = [int(t) for t in args.lengths.split(",")]
        if not args.tune_forward:
            tuning.force_config("fwd", FORWARD_CONFIG)
        p = torch.cuda.get_device_properties(0)
        log(f"[device] {p.name}, torch {torch.__version__}, forward "
            f"{'autotuned' if args.tune_forward else f'pinned to {FORWARD_CONFIG}'}")
    t0 = time.time()
    if not args.no_prewarm:
        if args.dry_run:
            prewarm(dev.type, args.tune_forward, workers=2, per_kernel=1)
        else:
            prewarm(dev.type, args.tune_forward, workers=min(8, os.cpu_count() or 1))
    # per-kernel breakdown at the first length only (a profiler pass each; not on the CPU)
    rows = [run_shape(T, H, D, dtype, dev, not args.dry_run, max(1, tokens // T), i == 0 and not args.dry_run)
            for i, T in enumerate(lengths)]
    tuning.force_config("fwd", None)
    tuned = {f"{n}/{size}": str(k.best_config) for (n, size), k in tuning._tuned.items()
             if getattr(k, "best_config", None) is not None}
    table(rows)
    log(f"\n[autotune] {tuned}\n[done] {time.time() - t0:.0f} s")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "backward_modes.json"), "w") as f:
            json.dump(dict(rows=rows, autotuned=tuned, dry_run=args.dry_run), f, indent=1)
    return 0 if all(a["ok"] for r in rows for a in r["agreement"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
