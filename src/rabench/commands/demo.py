"""`rabench demo`: the plan's comparison at toy scale on the bundled Austen corpus."""

from __future__ import annotations

import argparse
import math

from rabench.errors import RabenchError

HELP = "the plan's comparison at toy scale on the bundled Austen corpus (about 3 minutes on a 2-core CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="rabench-demo", help="output folder (default: rabench-demo)")
    p.add_argument("--seconds", type=float, default=None,
                   help="training seconds per attention: sets the iteration budget from the baseline's measured "
                        "speed (default: 20)")
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny, the CPU-sized one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: bars with ETA)")


def run(a: argparse.Namespace) -> None:
    from rabench.rundir import RunFolder
    from rabench.training.demo import DEFAULT_SECONDS, run_demo

    seconds = DEFAULT_SECONDS if a.seconds is None else a.seconds
    if not math.isfinite(seconds) or seconds <= 0:
        raise RabenchError(f"--seconds must be a positive number of seconds, got {a.seconds}")
    RunFolder(a.out).ensure_dir()  # an --out that is a file or cannot be written: one line, before any work
    run_demo(a.out, seconds=seconds, preset=a.preset, progress_bar=not a.no_progress)
