"""`rabench demo`: the plan's comparison at toy scale on the bundled Austen corpus."""

from __future__ import annotations

import argparse

HELP = "the plan's comparison at toy scale on the bundled Austen corpus (minutes on a CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="rabench-demo", help="output folder")
    p.add_argument("--seconds", type=float, default=25.0, help="training seconds per attention")
    p.add_argument("--preset", default="tiny")


def run(a: argparse.Namespace) -> None:
    from rabench.training.demo import run_demo

    run_demo(a.out, seconds=a.seconds, preset=a.preset)
