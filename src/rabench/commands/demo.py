"""`rabench demo`: the plan's comparison at toy scale on the bundled Austen corpus.

Prepares the data (once), trains each attention for the same training time on the `tiny`
preset (the suite's literal wall-clock design, one seed), evaluating every few iterations
so each curve is a curve, writes the report and ends with a one-paragraph verdict: what was
compared, what came out, why a toy run cannot decide, and the command for the real test.
About 3 minutes on a 2-core CPU; with a GPU it adds `ra-triton`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rabench.errors import RabenchError
from rabench.rundir import RunFolder

HELP = "the plan's comparison at toy scale on the bundled Austen corpus (about 3 minutes on a 2-core CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="rabench-demo", help="output folder (default: rabench-demo)")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"training seconds per attention, the same for each (default: {DEFAULT_SECONDS:g})")
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny, the CPU-sized one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: bars with ETA)")


def run(a: argparse.Namespace) -> None:
    seconds = DEFAULT_SECONDS if a.seconds is None else a.seconds
    if not math.isfinite(seconds) or seconds <= 0:
        raise RabenchError(f"--seconds must be a positive number of seconds, got {a.seconds}")
    RunFolder(a.out).ensure_dir()  # an --out that is a file or cannot be written: one line, before any work
    run_demo(a.out, seconds=seconds, preset=a.preset, progress_bar=not a.no_progress)


DEMO_ATTNS = ["sdpa", "open", "ra-open", "std-gated", "ra-norec"]
DEFAULT_SECONDS = 15.0
# Toy-scale evaluation: every 5 iterations (iteration 0 included) on 8 batches, so a run of a
# few dozen iterations still draws a curve; a small val set keeps evaluation cheap.
DEMO_TRAIN = {"eval_every": 5, "log_every": 5, "eval_batches": 8}
REAL_COMMAND = "rabench suite --out rabench-suite --preset gpt2-124m --seeds 0,1,2,3,4,5"


def demo_attns() -> list[str]:
    import torch

    return DEMO_ATTNS + (["ra-triton"] if torch.cuda.is_available() else [])


def run_demo(out: str | Path, seconds: float = DEFAULT_SECONDS, preset: str = "tiny", progress_bar: bool = True) -> Path:
    from rabench.analysis import write_report
    from rabench.data import prepare_bundled_austen
    from rabench.training.suite import SuitePlan, run_suite

    out = Path(out)
    data = prepare_bundled_austen(out)
    attns = demo_attns()
    plan = SuitePlan(attns=attns, seeds=[0], preset=preset, design="time", time_budget_s=seconds,
                     train=dict(DEMO_TRAIN))
    suite = out / "suite"
    run_dirs = run_suite(plan, suite, data, progress_bar=progress_bar, explicit_attns=False)
    rows = summary_rows(run_dirs)
    print(table(rows))
    _, html = write_report(suite)
    print()
    print(verdict(rows, seconds, preset, Path(html)))
    return suite


def summary_rows(run_dirs: list[Path]) -> list[dict]:
    """One row per finished run: attn, iters, ms/iter, final and best val loss."""
    rows = []
    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        s, c = folder.summary() or {}, folder.config() or {}
        if s.get("status") != "finished":
            continue
        rows.append({"attn": c.get("attn", run_dir.name), "iters": s["iters"], "ms": s.get("ms_per_iter"),
                     "final": s.get("final_val_loss"), "best": s.get("best_val_loss"),
                     "evals": sum(1 for r in folder.metrics() if "val_loss" in r)})
    return rows


def _num(x: float | None, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def table(rows: list[dict]) -> str:
    base = next((r["ms"] for r in rows if r["attn"] == "sdpa"), None)
    lines = [f"\n{'attention':<12}{'iters':>7}{'ms/iter':>10}{'x sdpa':>8}{'final val':>11}{'best val':>10}{'evals':>7}"]
    for r in rows:
        ratio = r["ms"] / base if base and r["ms"] else None
        lines.append(f"{r['attn']:<12}{r['iters']:>7}{_num(r['ms'], '.2f'):>10}{_num(ratio, '.2f'):>8}"
                     f"{_num(r['final'], '.4f'):>11}{_num(r['best'], '.4f'):>10}{r['evals']:>7}")
    lines.append("x sdpa: time per training step relative to sdpa (above 1 = slower). Every run had the same training "
                 "time; evaluation and compilation are not counted.")
    return "\n".join(lines)


def verdict(rows: list[dict], seconds: float, preset: str, html: Path) -> str:
    """The one paragraph a newcomer reads: compared, came out, why it cannot decide, what to run, where to look."""
    names = ", ".join(r["attn"] for r in rows)
    ranked = sorted((r for r in rows if r["final"] is not None and math.isfinite(r["final"])), key=lambda r: r["final"])
    base = next((r for r in rows if r["attn"] == "sdpa"), None)
    if ranked and base is not None and base["final"] is not None:
        came = (f"the lowest final val loss was {ranked[0]['attn']}'s ({ranked[0]['final']:.3f}, sdpa "
                f"{base['final']:.3f})")
        from rabench import attention

        ra = [r for r in rows if attention.entry(r["attn"]).family == "ra" and r["ms"] and base["ms"]]
        if ra:
            came += "; RA steps took " + ", ".join(f"{r['ms'] / base['ms']:.2f}x ({r['attn']})" for r in ra) + \
                    " the time of an sdpa step"
    else:
        came = "no run finished with a val loss to compare"
    return (f"Verdict: none from this demo. It compared {names} for {seconds:g} s of training each on the "
            f"{preset} model, one seed; {came}. A toy run cannot decide: one seed gives no interval (the decision "
            "rules need several seeds and an interval that excludes zero), a 2-layer model trained for seconds "
            "is far from convergence, and CPU step times say nothing about a GPU kernel. The real test, on a GPU: "
            f"`{REAL_COMMAND}`. The full report: {html}")
