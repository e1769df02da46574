"""metrics.jsonl: one JSON record per log point, appended and flushed as the run goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_NAME
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
            break  # a torn last line from a kill: everything before it is good
    return records


class MetricsLog:
    """Appends records; on resume, first drops records past the checkpoint so the curve has no duplicates."""

    def __init__(self, run_dir: Path, keep_through_iter: int | None = None) -> None:
        self.path = run_dir / METRICS_NAME
        if keep_through_iter is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(run_dir) if r.get("iter", 0) <= keep_through_iter]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
