"""The one owner of run folders: config.json, metrics.jsonl, summary.json and checkpoints.

Everything else (trainer, suite, report) reads and writes a run folder through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
CHECKPOINT_NAME = "ckpt.pt"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a kill mid-write) is dropped, with everything after it."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class RunFolder:
    """Read access to one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def config(self) -> dict[str, Any] | None:
        return read_json(self.path / CONFIG_NAME)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS_NAME)

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.path / SUMMARY_NAME)

    def state(self) -> str:
        """'absent' (no run), 'created', 'started', 'checkpointed', 'finished' or 'failed'."""
        if not (self.path / CONFIG_NAME).exists():
            return "absent"
        summary = self.summary() or {}
        if summary.get("status") in ("done", "finished"):
            return "finished"
        if summary.get("status") in ("failed", "stopped_nan"):
            return "failed"
        if (self.path / CHECKPOINT_NAME).exists():
            return "checkpointed"
        return "started" if (self.path / METRICS_NAME).exists() else "created"
