"""`rabench report`: report.md and report.html for a suite or folder of runs."""

from __future__ import annotations

import argparse

HELP = "write report.md and report.html for a suite or folder of runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("--out", help="where to write the report (default: the folder)")


def run(a: argparse.Namespace) -> None:
    from rabench.analysis import write_report

    write_report(a.folder, a.out)  # prints where it wrote
