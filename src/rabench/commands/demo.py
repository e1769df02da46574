"""`rabench demo`: the plan's comparison at toy scale, with a result in a few minutes on 2 CPU cores.

What a CPU forces, and the demo says in its output:
- a toy vocabulary: the bundled Austen corpus renumbered into 512 ids (rabench.data.toy) and the
  `toy` preset (tiny with that vocabulary); on a CPU the 50,304-id output layer was most of a step;
- equal iterations, not equal time: CPU step times say nothing about a GPU kernel, so every run
  trains the same number of steps (no calibration, no equal-time runs) and no speed is printed;
- three attentions (sdpa, RA as defined, and RA without its reciprocal term), three seeds each,
  so each gap to sdpa gets a paired interval, as the real test's do.
It ends with the committed GPU answer (read from the README's answer section) and the command
that reproduces it on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from rabench.errors import RabenchError
from rabench.experiment import BASELINE, DEMO_ATTNS
from rabench.rundir import RunFolder
from rabench.stats import finite

HELP = "the plan's comparison at toy scale on the bundled Austen corpus (a few minutes on a 2-core CPU)"

DEMO_SEEDS = [0, 1, 2]
DEFAULT_ITERS = 300
# every 25 iterations on 16 val batches (8k tokens): a curve of a dozen points, a few seconds of evaluation
DEMO_TRAIN = {"eval_every": 25, "log_every": 25, "eval_batches": 16, "device": "cpu"}
REAL_COMMANDS = (
    "rabench prepare hf:fineweb-edu --out data/fineweb --max-tokens 1000000000   # needs `pip install datasets`",
    f"rabench suite --out runs/main --data data/fineweb --preset gpt2-124m --attn {BASELINE},ra-triton "
    "--isotime-attn ra-triton --iters 8000 --seeds 0,1,2,3,4,5 --compile --compile-mode reduce-overhead",
)
README = Path(__file__).resolve().parents[3] / "README.md"  # src/rabench/commands/demo.py -> the checkout's root


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="rabench-demo", help="output folder (default: rabench-demo)")
    p.add_argument("--iters", type=int, default=None,
                   help=f"iterations per run, the same for every attention (default: {DEFAULT_ITERS})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: bars with ETA)")


def run(a: argparse.Namespace) -> None:
    iters = DEFAULT_ITERS if a.iters is None else a.iters
    if iters < 1:
        raise RabenchError(f"--iters must be at least 1, got {a.iters}")
    RunFolder(a.out).ensure_dir()  # an --out that is a file or cannot be written: one line, before any work
    run_demo(a.out, iters=iters, progress_bar=not a.no_progress)


def run_demo(out: str | Path, iters: int = DEFAULT_ITERS, seeds: list[int] | None = None,
             progress_bar: bool = True) -> Path:
    """Train every attention and seed for `iters` iterations into out/runs, print the curves, the
    paired gaps and the GPU answer; returns the runs' folder. Runs already finished are kept."""
    from rabench.data import prepare_bundled_austen
    from rabench.data.toy import toy_vocabulary
    from rabench.model import PRESETS
    from rabench.training import TrainConfig, train
    from rabench.suite.folder import run_name

    out = Path(out)
    seeds = list(DEMO_SEEDS if seeds is None else seeds)
    vocab = PRESETS["toy"].vocab_size  # the toy vocabulary the `toy` preset is built for
    data = toy_vocabulary(prepare_bundled_austen(out), out / f"data-austen-toy{vocab}", vocab)
    print(setup_text(iters, seeds), flush=True)
    runs = out / "runs"
    run_dirs = []
    with one_thread():
        for seed in seeds:  # seed by seed, so an interrupted demo has whole pairs
            for attn in DEMO_ATTNS:
                run_dirs.append(runs / run_name(attn, seed))
                cfg = TrainConfig(attn=attn, data=data, out=str(run_dirs[-1]), preset="toy", seed=seed,
                                  max_iters=iters, resume=True, progress_bar=progress_bar, **DEMO_TRAIN)
                train(cfg)
    curves = read_curves(run_dirs)
    print()
    print(curve_table(curves))
    print()
    print(gaps_text(curves))
    print(f"\nThe runs (config.json, metrics.jsonl, summary.json each): {runs}")
    print()
    print(gpu_answer_text())
    return runs


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread while the demo trains: the toy model's matrices are too small to split, and
    on a busy 2-core machine a second thread waiting for its core made a toy step 30x slower (1,640
    against 55 ms, the same losses)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def setup_text(iters: int, seeds: list[int]) -> str:
    """What runs, and the choices a CPU forces, from the toy preset's own settings."""
    from rabench.presets import preset_record

    toy = preset_record("toy")
    model, batch, seq = toy.model, toy.batch_size, toy.seq_len
    return (f"rabench demo: {', '.join(DEMO_ATTNS)} on the bundled Austen corpus, {iters} iterations each, seeds "
            f"{', '.join(map(str, seeds))}.\nToy scale, so that it trains on 2 CPU cores in minutes: a "
            f"{model.n_layer}-layer, {model.n_embd}-wide model (preset toy) on a toy vocabulary "
            f"({model.vocab_size - 1} most frequent GPT-2 tokens, every rarer one as one id), batches of {batch} x "
            f"{seq} tokens, one CPU thread. Equal iterations, not equal time: CPU step times say nothing about a "
            "GPU, so no speed is measured here.")


def read_curves(run_dirs: list[Path]) -> dict[str, dict[int, dict[int, float]]]:
    """{attn: {seed: {iteration: val_loss}}} of the finished runs."""
    curves: dict[str, dict[int, dict[int, float]]] = {}
    for run_dir in run_dirs:
        folder = RunFolder(run_dir)
        summary, config = folder.summary() or {}, folder.config() or {}
        if summary.get("status") != "finished":
            continue
        points = {r["iter"]: r["val_loss"] for r in folder.metrics() if finite(r.get("val_loss"))}
        curves.setdefault(config["attn"], {})[config["seed"]] = points
    return curves


def common_iters(curves: dict[str, dict[int, dict[int, float]]]) -> list[int]:
    sets = [set(points) for runs in curves.values() for points in runs.values()]
    return sorted(set.intersection(*sets)) if sets else []


def curve_table(curves: dict[str, dict[int, dict[int, float]]], columns: int = 6) -> str:
    """val_loss (mean over seeds) at evenly spaced evaluations every run shares: the curves in numbers."""
    shared = common_iters(curves)
    if not shared:
        return "no finished run to show"
    step = max(1, (len(shared) - 1) // (columns - 1))
    shown = sorted(set(shared[::step]) | {shared[-1]})
    lines = ["val_loss at equal iterations (mean over seeds; lower is better):",
             f"{'iteration':<12}" + "".join(f"{i:>8}" for i in shown)]
    for attn, runs in curves.items():
        means = [sum(points[i] for points in runs.values()) / len(runs) for i in shown]
        lines.append(f"{attn:<12}" + "".join(f"{m:>8.3f}" for m in means))
    return "\n".join(lines)


def gaps_text(curves: dict[str, dict[int, dict[int, float]]]) -> str:
    """How far the curves fell against the seeds' spread, and each attention's paired gap to the baseline at
    the end."""
    from rabench.stats import paired_stats

    shared = common_iters(curves)
    base = curves.get(BASELINE)
    if not shared or not base:
        return f"no finished {BASELINE} run: no gap to report"
    first, last = shared[0], shared[-1]
    drop = [points[first] - points[last] for points in base.values()]
    finals = [points[last] for points in base.values()]
    spread = max(finals) - min(finals)
    lines = [f"From iteration {first} to {last} {BASELINE}'s val_loss fell by {min(drop):.2f} to {max(drop):.2f} "
             f"(seeds); its final values differ by {spread:.3f} between seeds: the training signal is far above "
             "the noise."]
    lines.append(f"Gap to {BASELINE} at iteration {last} (candidate - {BASELINE}, paired by seed: the same initial weights "
                 "and batches):")
    for attn, runs in curves.items():
        if attn == BASELINE:
            continue
        margins = [runs[s][last] - base[s][last] for s in sorted(runs) if s in base]
        if not margins:
            continue
        stats = paired_stats(margins)
        lines.append(f"  {attn:<10} {stats.text(digits=3)}  ->  {gap_words(stats)}")
    lines.append("A gap separates beyond the seeds' noise when its interval excludes 0 and its exact sign-flip p is "
                 "below 0.05, as in every rabench report (here, at toy scale; the GPU answer below is the real one).")
    return "\n".join(lines)


def gap_words(stats) -> str:
    """The suite's rule in words (rabench.stats.decide): a gap separates only when its interval
    excludes 0 and its exact sign-flip p is below 0.05, which takes 6 seeds; the demo never
    claims more than a report would."""
    from rabench.stats import FAIL, MIN_VERDICT_PAIRS, PASS, decide

    if stats.n < 2:
        return "one seed: no interval"
    if stats.lo <= 0 <= stats.hi:
        return f"not separated from {BASELINE}"
    side = f"ahead of {BASELINE}" if stats.hi < 0 else f"behind {BASELINE}"
    if decide(stats) in (PASS, FAIL):
        return f"{side} beyond the noise"
    return f"leans {side}; {stats.n} seeds are too few for a verdict (the exact test needs {MIN_VERDICT_PAIRS})"


def answer_lines(readme: str) -> list[str] | None:
    """The README's answer: its bold answer line and the bold leads of the first three bullets under it."""
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("**The answer")), None)
    if start is None:
        return None
    leads = []
    for line in lines[start + 1:]:
        match = re.match(r"- \*\*(.+?)\*\*", line)
        if match:
            leads.append(match.group(1).rstrip(",;: "))
        if len(leads) == 3:
            break
    if len(leads) < 3:
        return None
    return [lines[start].replace("**", "").strip()] + leads


def gpu_answer_text(readme: Path = README) -> str:
    found = answer_lines(readme.read_text(encoding="utf-8")) if readme.is_file() else None
    if found is None:
        head = "The committed GPU answer is in the project's README.md ('What it answers'), not beside this install."
    else:
        answer, *leads = found
        head = "\n".join([f"The committed GPU answer (README.md; runs in results/campaign/). {answer}"]
                         + [f"  - {lead}" for lead in leads])
    return (head + "\nTo reproduce it on a GPU, with data of GPT-2's scale (not the 1M-token Austen corpus; the "
            "campaign's own data and commands are in results/campaign/README.md; --devices 0,1,2,3 spreads the runs "
            "over four GPUs):\n" + "\n".join(f"  {c}" for c in REAL_COMMANDS))
