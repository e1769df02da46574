"""Which full-size tensor ops does an attention core add around its kernel, forward and backward?
A CPU check of a route's copies and pointwise work, no GPU needed: the core is traced the way
torch.compile traces it in training (q, k, v as views of one qkv projection), AOTAutograd splits
the forward and backward graphs, and every op whose result has at least B*H*T*D elements is
listed (views, transposes and other aliases left out). The RA kernel is one opaque op here
(TRITON_INTERPRET=1), so what is listed is the work around it; inductor fuses some of it on a
GPU, so a count is a direction, not a time.

Usage:
    PYTHONPATH=src python3 benchmarks/graph_ops.py [--attn ra-triton,ra-lowrank,ra-gated]

Prints, per attention, the forward's and the backward's full-size ops in graph order.
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")  # before rabench.kernels is imported

import torch  # noqa: E402
from torch._functorch.aot_autograd import aot_module_simplified  # noqa: E402

from rabench import attention  # noqa: E402
from rabench.attention import AttentionSpec  # noqa: E402

SHAPE = (2, 4, 32, 16)  # B, H, T, D: small, the counts do not depend on it
ALIASES = ("view", "transpose", "permute", "unbind", "select", "expand", "getitem", "unsqueeze", "alias",
           "detach")


def traced_graphs(name: str) -> dict[str, torch.fx.GraphModule]:
    """The forward and backward graphs of one forward+backward of `name` on the Triton route."""
    b, h, t, d = SHAPE
    options = attention.resolve_options(name, {})
    if "backend" in options:
        options["backend"] = "triton"
    core = attention.build(name, AttentionSpec(h, d, h * d, 0, 1, options))
    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(tag: str):
        def compiler(gm: torch.fx.GraphModule, _inputs) -> object:
            graphs[tag] = gm
            return gm.forward
        return compiler

    def backend(gm: torch.fx.GraphModule, inputs) -> object:
        return aot_module_simplified(gm, inputs, fw_compiler=keep("forward"), bw_compiler=keep("backward"))

    def layer(qkv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))
        return core(q, k, v, x)

    qkv = torch.randn(b, t, 3, h, d, requires_grad=True)
    x = torch.randn(b, t, h * d, requires_grad=True)
    torch.compile(layer, backend=backend, fullgraph=True)(qkv, x).sum().backward()
    return graphs


def full_size_ops(gm: torch.fx.GraphModule) -> list[str]:
    """The graph's ops, in order, whose result (or one of them) has at least B*H*T*D elements."""
    b, h, t, d = SHAPE
    ops = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target).replace("aten.", "").replace(".default", "")
        val = node.meta.get("val")
        vals = val if isinstance(val, (tuple, list)) else [val]
        if any(a in target for a in ALIASES):
            continue
        if any(isinstance(v, torch.Tensor) and v.numel() >= b * h * t * d for v in vals):
            ops.append(target)
    return ops


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)  # AOTAutograd's notes on the opaque op
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attn", default="ra-triton,ra-lowrank,ra-gated,ra-adaptive,ra-budget",
                    help="comma-separated attention names")
    args = ap.parse_args()
    for name in args.attn.split(","):
        graphs = traced_graphs(name)
        for tag in ("forward", "backward"):
            ops = full_size_ops(graphs[tag])
            print(f"{name:12s} {tag:8s} {len(ops):2d}  {' '.join(ops)}")


if __name__ == "__main__":
    main()
