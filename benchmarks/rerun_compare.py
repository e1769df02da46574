"""Compare a run with its rerun: same config, seed and data order, so their train losses track
each other window by window until something sets one apart. Prints a markdown table (per block
of iterations: the mean and largest train-loss difference, each run's val_loss and largest
gradient norm where logged) and draws the difference, val_loss and gradient norms in one PNG.

    python benchmarks/rerun_compare.py results/campaign/horizon-3/ra-triton-isotime-s0 \
        results/stability/rerun-horizon-3/ra-triton-isotime-s0 --out results/stability/rerun-horizon-3.png

Why a script and not a report section: the report pairs runs by seed within one batch and card,
and a rerun on another host is neither a pair nor a new seed; this reads two folders side by side.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rabench.analysis.plots import logged_series
from rabench.analysis.runs import Run


def series(run: Run, key: str) -> dict[int, float]:
    """iteration -> value for every record that logged `key` with a finite number."""
    iters, values = logged_series(run, key)
    return dict(zip(iters.astype(int).tolist(), values.tolist()))


def block_rows(a: Run, b: Run, block: int) -> list[str]:
    """One markdown row per block of `block` iterations."""
    ta, tb = series(a, "train_loss"), series(b, "train_loss")
    va, vb = series(a, "val_loss"), series(b, "val_loss")
    ga, gb = series(a, "grad_norm_max"), series(b, "grad_norm_max")
    common = sorted(set(ta) & set(tb))
    last = max(common[-1], *va, *vb)
    rows = []
    for start in range(0, common[-1] + 1, block):
        diffs = [ta[i] - tb[i] for i in common if start <= i < start + block]
        if not diffs:
            continue
        end = min(start + block, last)

        def val(v: dict[int, float]) -> str:
            at = [i for i in v if start < i <= start + block]
            return f"{v[max(at)]:.4f}" if at else "-"

        def gmax(g: dict[int, float]) -> str:
            xs = [x for i, x in g.items() if start <= i < start + block]
            return f"{max(xs):.2f}" if xs else "-"

        rows.append(f"| {start:,}-{end:,} | {np.mean(diffs):+.4f} | {max(diffs, key=abs):+.4f} "
                    f"| {val(va)} | {val(vb)} | {gmax(ga)} | {gmax(gb)} |")
    return rows


def plot(a: Run, b: Run, path: Path) -> None:
    """train_loss difference a - b, both val_loss curves, both gradient-norm maxima."""
    ta, tb = series(a, "train_loss"), series(b, "train_loss")
    common = sorted(set(ta) & set(tb))
    fig = Figure(figsize=(15, 4))
    ax_d, ax_v, ax_g = fig.subplots(1, 3)
    ax_d.plot(common, [ta[i] - tb[i] for i in common], lw=0.6, color="C3")
    ax_d.axhline(0, color="k", lw=0.5)
    ax_d.set_title(f"train_loss: {a.where} minus {b.where}", fontsize=8)
    curves = [(run, color, series(run, "val_loss")) for run, color in ((a, "C3"), (b, "C0"))]
    for run, color, v in curves:
        ax_v.plot(list(v), list(v.values()), marker="o", ms=3, color=color, label=run.where)
        g = series(run, "grad_norm_max")
        if g:
            ax_g.plot(list(g), list(g.values()), lw=0.6, color=color, label=run.where)
    # from a quarter of the way in: the first evaluations (11 nats at iteration 0) would flatten the rest
    x_from = 0.25 * max(max(v) for _, _, v in curves)
    shown = [y for _, _, v in curves for x, y in v.items() if x >= x_from]
    ax_v.set_ylim(min(shown) - 0.02, max(shown) + 0.02)
    ax_v.set_title("val_loss")
    ax_g.set_yscale("log")
    ax_g.set_title("grad_norm_max (before clipping; where logged)")
    for ax in (ax_d, ax_v, ax_g):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    ax_v.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the original run's folder")
    parser.add_argument("rerun", type=Path, help="the rerun's folder (same config, seed and data order)")
    parser.add_argument("--block", type=int, default=1000, help="iterations per table row (default 1000)")
    parser.add_argument("--out", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args()
    a, b = Run.read(args.run, args.run.parent.name), Run.read(args.rerun, args.rerun.parent.name)
    print("| iterations | train_loss, mean a - b | largest | val_loss a | val_loss b | grad_norm_max a | grad_norm_max b |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(block_rows(a, b, args.block)))
    print(f"\na = {a.where}, b = {b.where}; val_loss at each block's last evaluation")
    if args.out:
        plot(a, b, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
