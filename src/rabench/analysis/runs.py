"""Load run folders written by the trainer and group them by attention config.

A run folder holds config.json, metrics.jsonl and (when the run ended cleanly)
summary.json. Everything downstream works on `Run` and `ConfigGroup`, so the
on-disk format is read in exactly one place.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError

BASELINE = "sdpa"
CONTROL = "std-gated"
RA_PREFIX = "ra-"


def is_ra(attn: str) -> bool:
    """RA-family configs are named `ra-*` (ra-open, ra-triton and the variants)."""
    return attn.startswith(RA_PREFIX)


@dataclass
class Run:
    """One training run: its config, its log records and its summary if it finished."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    label: str = ""  # the config label it is grouped under; set by group_by_config
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # derived arrays, see curves.py

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def attn(self) -> str:
        return str(self.config.get("attn", "unknown"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def status(self) -> str:
        """'done', 'stopped_nan', 'interrupted'; a run without summary.json was interrupted."""
        if self.summary is None:
            return "interrupted"
        return str(self.summary.get("status", "done"))

    @property
    def interrupted(self) -> bool:
        return self.summary is None or self.status == "interrupted"

    @property
    def stop_reason(self) -> str:
        if self.summary is None:
            return "no summary.json (interrupted)"
        return str(self.summary.get("stop_reason") or self.status)

    @property
    def ran_to_plateau(self) -> bool:
        """Did this run train until val_loss stopped improving (the plan's full test)?
        An --until-plateau run that hit its time cap first did not."""
        if self.summary is None or self.interrupted:
            return False
        reason = self.summary.get("stop_reason")
        if reason is None:  # no reason recorded: trust the request
            return bool(self.config.get("until_plateau")) and self.status == "done"
        return reason == "plateau"

    @cached_property
    def evals(self) -> list[dict[str, Any]]:
        """The evaluation records (those with a finite val_loss), in log order; cached because
        an hour at 2 ms/iter logs many records and the report asks for them often."""
        return [m for m in self.metrics if _finite(m.get("val_loss"))]

    @property
    def last_record(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def iters(self) -> int:
        if self.summary is not None and self.summary.get("iters") is not None:
            return int(self.summary["iters"])
        return int(self.last_record.get("iter", 0))

    @property
    def tokens(self) -> int:
        if self.summary is not None and self.summary.get("tokens") is not None:
            return int(self.summary["tokens"])
        return int(self.last_record.get("tokens", 0))

    @property
    def train_time_s(self) -> float:
        if self.summary is not None and self.summary.get("train_time_s") is not None:
            return float(self.summary["train_time_s"])
        return float(self.last_record.get("train_time_s", 0.0))

    @property
    def ms_per_iter(self) -> float:
        """Median ms/iter over the run: the summary's, else the median of the log records."""
        if self.summary is not None and _finite(self.summary.get("ms_per_iter")):
            return float(self.summary["ms_per_iter"])
        values = [float(m["ms_per_iter"]) for m in self.metrics if _finite(m.get("ms_per_iter"))]
        return statistics.median(values) if values else math.nan

    @property
    def peak_mem_gb(self) -> float:
        if self.summary is not None and _finite(self.summary.get("peak_mem_gb")):
            return float(self.summary["peak_mem_gb"])
        values = [float(m["peak_mem_gb"]) for m in self.metrics if _finite(m.get("peak_mem_gb"))]
        return max(values) if values else math.nan

    @property
    def final_val_loss(self) -> float:
        """The last evaluation's val_loss (NaN if the run never evaluated)."""
        evals = self.evals
        return float(evals[-1]["val_loss"]) if evals else math.nan

    @property
    def best_val_loss(self) -> float:
        evals = self.evals
        return min(float(m["val_loss"]) for m in evals) if evals else math.nan

    @cached_property
    def gate_records(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if isinstance(m.get("gates"), dict)]


@dataclass
class ConfigGroup:
    """All seeds of one attention config."""

    label: str
    attn: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def run_for_seed(self, seed: int) -> Run | None:
        return next((r for r in self.runs if r.seed == seed), None)

    @property
    def is_ra(self) -> bool:
        return is_ra(self.attn)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RabenchError(f"{path} is not valid JSON: {exc}") from None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse metrics.jsonl; a torn last line (the run was killed mid-write) is skipped."""
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RabenchError(f"{path}:{number} is not valid JSON") from None
    return records


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "metrics.jsonl").is_file()


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not is_run_dir(path):
        raise RabenchError(f"{path} is not a run folder (needs config.json and metrics.jsonl)")
    summary_path = path / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else None
    return Run(path, _read_json(path / "config.json"), _read_metrics(path / "metrics.jsonl"), summary)


def find_run_dirs(folder: str | Path) -> list[Path]:
    """The folder itself if it is a run, else its run subfolders, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RabenchError(f"{folder} is not a folder")
    if is_run_dir(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_run_dir(p))


def load_runs(folder: str | Path) -> list[Run]:
    dirs = find_run_dirs(folder)
    if not dirs:
        raise RabenchError(f"no runs in {folder} (a run folder holds config.json and metrics.jsonl)")
    return [load_run(d) for d in dirs]


def _options_key(run: Run) -> str:
    return json.dumps(run.config.get("attn_options") or {}, sort_keys=True)


def _options_text(run: Run) -> str:
    options = run.config.get("attn_options") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def group_by_config(runs: list[Run]) -> dict[str, ConfigGroup]:
    """Group runs by (attn, attn_options); the label is the attn name, plus the options
    only where one attn was run with several option sets. Groups are ordered sdpa first,
    then the standard configs, then RA, each alphabetically; runs by seed."""
    option_sets: dict[str, set[str]] = {}
    for run in runs:
        option_sets.setdefault(run.attn, set()).add(_options_key(run))
    groups: dict[str, ConfigGroup] = {}
    for run in runs:
        label = run.attn
        if len(option_sets[run.attn]) > 1:
            label = f"{run.attn}({_options_text(run)})"
        run.label = label
        groups.setdefault(label, ConfigGroup(label, run.attn)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.seed, r.name))
    order = sorted(groups, key=lambda lb: (groups[lb].attn != BASELINE, groups[lb].is_ra, lb))
    return {label: groups[label] for label in order}


def duplicate_seeds(group: ConfigGroup) -> list[int]:
    """Seeds that appear more than once in a group (pairing by seed then uses the first)."""
    seen: set[int] = set()
    dups = []
    for seed in group.seeds:
        if seed in seen and seed not in dups:
            dups.append(seed)
        seen.add(seed)
    return dups
