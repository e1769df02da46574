"""`rabench demo`: the plan's comparison at toy scale on the bundled Austen corpus.

Prepares the data (once), runs each available attention for the same short training
time on the `tiny` preset, prints a comparison table and writes the report. On a
2-core CPU it takes a few minutes; with a GPU it adds `ra-triton`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rabench.training.suite import SuitePlan, run_suite

DEMO_ATTNS = ["sdpa", "open", "ra-open", "std-gated"]


def demo_attns() -> list[str]:
    return DEMO_ATTNS + (["ra-triton"] if torch.cuda.is_available() else [])


def prepared_austen(out: Path) -> str:
    from rabench.data import prepare

    data_dir = out / "data-austen"
    if not (data_dir / "meta.json").exists():
        prepare(["austen"], data_dir)
    return str(data_dir)


def run_demo(out: str | Path, seconds: float = 25.0, preset: str = "tiny", progress_bar: bool = True) -> Path:
    out = Path(out)
    data = prepared_austen(out)
    plan = SuitePlan(attns=demo_attns(), seeds=[0], preset=preset, time_budget_s=seconds,
                     train={"eval_every": 50, "warmup_iters": 20, "eval_batches": 8})
    run_dirs = run_suite(plan, out / "suite", data, progress_bar=progress_bar)
    print_table(run_dirs)
    from rabench.analysis import write_report

    write_report(out / "suite")  # prints where it wrote
    return out / "suite"


def print_table(run_dirs: list[Path]) -> None:
    rows = []
    for run_dir in run_dirs:
        s = json.loads((run_dir / "summary.json").read_text())
        rows.append((run_dir.name, s["iters"], s["ms_per_iter"], s["final_val_loss"], s["best_val_loss"]))
    base = next((r[2] for r in rows if r[0].startswith("sdpa-")), None)
    print(f"\n{'run':<16}{'iters':>8}{'ms/iter':>10}{'x sdpa':>8}{'final val':>11}{'best val':>10}")
    for name, iters, ms, final, best in rows:
        ratio = f"{ms / base:.2f}" if base and ms else "-"
        print(f"{name:<16}{iters:>8}{ms:>10.2f}{ratio:>8}{final:>11.4f}{best:>10.4f}")
    print("(time budget = training time only; evaluation and compilation excluded)")
