"""What the eager RA module costs the host around its kernels, measured on a CPU.

The kernels' launches are replaced by no-ops (Triton's interpreter is only needed to build the
module), so what is timed is the Python and torch work of one layer's forward and backward: the
gates' arithmetic, the argument checks, the allocations, autograd. Three figures per attention:

    layer us     forward+backward of one layer (12 layers per step, best of --repeats)
    constant us  the same with the kernel's scales and bias vector passed as constants (no gates'
                 gradient), ra-triton only: what the gates' gradient flow costs
    ops          aten ops dispatched in one layer's forward and in its backward

On a GPU each op also pays CUDA's launch and the four kernels pay Triton's launcher, so these
figures are a floor for the GPU host's time, useful to compare changes on one machine
(notes/kernel-versions.md, "Eager host time").

Usage (CPU, no GPU needed):
    PYTHONPATH=src python3 benchmarks/eager_wrapper_cpu.py [--attn ra-triton,sdpa] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ["TRITON_INTERPRET"] = "1"  # before rabench.kernels is imported: the module builds on a CPU

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from rabench.bench.attention_rows import build_layers  # noqa: E402
from rabench.kernels import launching, ra_attention  # noqa: E402

B, H, T, D = 1, 12, 16, 64  # small: the host's work does not depend on the shape
LAYERS = 12


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def no_launches() -> None:
    """The kernels' launches become no-ops: outputs stay allocated, uncomputed."""
    launching.launch = lambda *args, **kwargs: None  # the RA kernels
    launching.launch_untuned = lambda *args, **kwargs: None  # delta and the gate kernels


def inputs() -> tuple[torch.Tensor, ...]:
    """q, k, v as views of one qkv projection (as the model makes them), x, and dO."""
    c = H * D
    qkv = torch.randn(B, T, 3 * c, requires_grad=True)
    q, k, v = (z.view(B, T, H, D).transpose(1, 2) for z in qkv.split(c, dim=2))
    return q, k, v, torch.randn(B, T, c), torch.randn(B, H, T, D)


def best_layer_us(layers: dict[str, object], go: torch.Tensor, repeats: int, steps: int = 30) -> dict[str, float]:
    """Per variant, the best over `repeats` of the mean host time of one layer's forward+backward.
    The variants take turns in every repeat, so a slower spell of a shared machine hits them alike;
    the garbage collector is off while timing (as timeit does), its pauses landing on whichever
    variant happens to run then."""
    def step(layer) -> None:
        outs = [layer(i) for i in range(LAYERS)]
        torch.autograd.backward(outs, [go] * LAYERS)
    best = {name: float("inf") for name in layers}
    for layer in layers.values():
        for _ in range(3):
            step(layer)
    gc.disable()
    try:
        for _ in range(repeats):
            for name, layer in layers.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(layer)
                best[name] = min(best[name], (time.perf_counter() - t0) / steps / LAYERS * 1e6)
    finally:
        gc.enable()
    return best


def op_counts(core, q, k, v, x, go) -> tuple[int, int]:
    """aten ops in one layer's forward and in its backward."""
    with OpCounter() as fwd:
        out = core(q, k, v, x)
    with OpCounter() as bwd:
        out.backward(go)
    return fwd.count, bwd.count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="ra-triton,sdpa", help="comma-separated attentions")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    no_launches()
    q, k, v, x, go = inputs()
    for name in a.attn.split(","):
        cores = build_layers(name, H, D, LAYERS, torch.device("cpu"))
        layers = {"layer": lambda i: cores[i](q, k, v, x)}
        if name == "ra-triton":
            s1, s2, bias = torch.rand(H), torch.rand(H), torch.randn(H, D)
            layers["constant"] = lambda i: ra_attention(q, k, None, None, v, bias, scale1=s1, scale2=s2, tied=True)
        us = best_layer_us(layers, go, a.repeats)
        fwd_ops, bwd_ops = op_counts(cores[0], q, k, v, x, go)
        line = f"{name:>12}: layer {us['layer']:6.1f} us, ops {fwd_ops} forward + {bwd_ops} backward"
        if "constant" in us:
            line += f"; with constant scales and bias {us['constant']:6.1f} us"
        print(line)


if __name__ == "__main__":
    main()
