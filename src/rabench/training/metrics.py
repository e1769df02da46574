"""Deprecated: metrics.jsonl is read and written by `rabench.rundir` only.

`read_metrics` stays for callers not yet moved to `RunFolder(path).metrics()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rabench.rundir import RunFolder


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return RunFolder(run_dir).metrics()
