"""`rabench suite`: the plan's tests run one after another, resumably, into one folder.

One run folder per (attention, seed), named `<attn>-s<seed>`. A finished run (its
summary says done) is skipped; an interrupted one is resumed from its checkpoint.
Every run gets the same data, seed list, hyperparameters and time accounting.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rabench import attention
from rabench.errors import RabenchError
from rabench.training.config import TrainConfig
from rabench.training.distributed import is_main_process
from rabench.training.timeparse import parse_duration

PLAN_ATTNS = ["sdpa", "open", "ra-open", "ra-triton", "std-gated"]  # the plan's four tests + the control
SUITE_FILE = "suite.json"


@dataclass
class SuitePlan:
    attns: list[str] = field(default_factory=lambda: list(PLAN_ATTNS))
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "gpt2-124m"
    time_budget_s: float | None = 3600.0
    max_iters: int | None = None
    until_plateau: bool = False
    data: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-attention options
    train: dict[str, Any] = field(default_factory=dict)  # other TrainConfig fields, same for every run

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_plan(path: str | Path | None) -> SuitePlan:
    """The user's plan by default; a TOML file may override any field."""
    plan = SuitePlan()
    if path is None:
        return plan
    p = Path(path)
    if not p.exists():
        raise RabenchError(f"plan file {p} not found")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RabenchError(f"plan file {p} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(SuitePlan)} | {"time", "iters"}
    unknown = set(raw) - known
    if unknown:
        raise RabenchError(f"plan file {p}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    if "time" in raw:
        plan.time_budget_s, plan.max_iters = parse_duration(str(raw.pop("time"))), None
    if "iters" in raw:
        plan.max_iters, plan.time_budget_s = int(raw.pop("iters")), None
    for key, value in raw.items():
        setattr(plan, key, value)
    return plan


def validate(plan: SuitePlan) -> None:
    if not plan.attns:
        raise RabenchError("the suite has no attention to run")
    for name in plan.attns:
        attention.entry(name)
        attention.resolve_options(name, plan.options.get(name))
    train_fields = {f.name for f in fields(TrainConfig)}
    bad = set(plan.train) - train_fields
    if bad:
        raise RabenchError(f"unknown training settings in the plan: {sorted(bad)}")
    if plan.time_budget_s is None and plan.max_iters is None:
        raise RabenchError("the suite needs a budget: --time or --iters")


def run_name(attn: str, seed: int) -> str:
    return f"{attn}-s{seed}"


def run_status(run_dir: Path) -> str:
    """'done', 'partial' (can be resumed) or 'new'."""
    summary = run_dir / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") == "done":
        return "done"
    return "partial" if (run_dir / "config.json").exists() else "new"


def run_suite(plan: SuitePlan, out: str | Path, data: str, progress_bar: bool = True) -> list[Path]:
    """Run every (seed, attention) in order, skipping finished runs; returns the run folders."""
    validate(plan)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # under torchrun every rank runs the suite; rank 0 alone writes and prints
        (out / SUITE_FILE).write_text(json.dumps(plan.to_dict() | {"data": data}, indent=2) + "\n")
    from rabench.training.trainer import train

    say = print if is_main_process() else (lambda *_: None)

    run_dirs = []
    for seed in plan.seeds:
        for attn in plan.attns:
            run_dir = out / run_name(attn, seed)
            run_dirs.append(run_dir)
            status = run_status(run_dir)
            if status == "done":
                say(f"[suite] {run_dir.name}: done, skipped")
                continue
            say(f"[suite] {run_dir.name}: {'resuming' if status == 'partial' else 'starting'}")
            cfg = TrainConfig(attn=attn, data=data, out=str(run_dir), preset=plan.preset, seed=seed,
                              attn_options=dict(plan.options.get(attn, {})), time_budget_s=plan.time_budget_s,
                              max_iters=plan.max_iters, until_plateau=plan.until_plateau,
                              resume=status == "partial", progress_bar=progress_bar)
            for key, value in plan.train.items():
                setattr(cfg, key, value)
            summary = train(cfg)
            say(f"[suite] {run_dir.name}: {summary['iters']} iters, val {summary['final_val_loss']:.4f}, "
                  f"{summary['ms_per_iter']} ms/iter")
    return run_dirs
