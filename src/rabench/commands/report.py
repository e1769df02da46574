"""`rabench report`: report.md and report.html for a suite or folder of runs."""

from __future__ import annotations

import argparse

HELP = "write report.md and report.html for a suite or folder of runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a run, suite or campaign folder")
    p.add_argument("--out", help="folder to write report.md/report.html into (default: the folder itself)")


def run(a: argparse.Namespace) -> None:
    from rabench.analysis import write_report
    from rabench.rundir import RunFolder

    if a.out is not None:
        RunFolder(a.out).ensure_dir()  # a file or an unwritable place: one line before any work

    write_report(a.folder, a.out)  # prints where it wrote
