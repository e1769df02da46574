"""Runs and batches as the report sees them, read only through `rabench.rundir.RunFolder`.

A folder handed to `rabench report` is one run, one suite (a batch: run folders plus
suite.json and calibration.json) or a campaign (several suite folders). Every run knows
its batch (the folder that holds it) and its card (gpu_name + host): runs are paired by
seed only within one batch and one card, and the pairs are pooled across batches.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rabench import attention
from rabench.errors import RabenchError
from rabench.experiment import BASELINE
from rabench.rundir import RunFolder, read_json
from rabench.stats import finite
# the suite folder's file names and the roles the suite writes in config.json labels (inferred for older runs)
from rabench.suite.folder import (BASE_ROLE, CALIBRATION_FILE, ISO_ITER, ISO_TIME, ISOTIME_TAG, LADDER, LR_SWEEP,
                                  PLATEAU, SUITE_FILE, TIME)

RA_PREFIX = "ra-"
MATCH_TOL = 1e-6  # the last evaluation's val_loss and summary.json's final_val_loss: the same float, JSON round-tripped
MAX_DEPTH = 3  # campaign / batch / run


RA_ROLES = ("ra", "ra-variant")  # labels.attn_role values on RA's side of the comparison


def registry_role(attn: str) -> str:
    """The role of a config whose folder records none (written before labels.attn_role existed):
    a built-in's registry role, else the `ra-` naming convention. Never imports a plug-in, so
    the report does not depend on what its own process can import."""
    if attn in attention.registry.builtin_names():
        return attention.entry(attn).attn_role
    return "ra" if attn.startswith(RA_PREFIX) else "candidate"


def is_variant(attn: str) -> bool:
    """One of the plan's optimisation directions (question 5), for a config with no recorded role."""
    return registry_role(attn) == "ra-variant"


@dataclass
class Run:
    """One training run: its config, log records, summary and folder state."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    state: str
    batch: str = ""  # the suite folder it belongs to, relative to the report's folder
    skipped_records: int = 0  # metrics.jsonl lines left out: unreadable, or another run's (see RunFolder)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # derived arrays, see curves.py

    @classmethod
    def read(cls, path: Path, batch: str) -> Run:
        folder = RunFolder(path)
        config = folder.config()
        if config is None:
            raise RabenchError(f"{path}/config.json is missing or not valid JSON")
        metrics, skipped = folder.metrics_with_skips(config)
        return cls(path, config, metrics, folder.summary(), folder.state(), batch, skipped_records=skipped)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def where(self) -> str:
        """batch/name, or the name alone for a run directly in the report's folder."""
        return self.name if self.batch in ("", ".") else f"{self.batch}/{self.name}"

    @property
    def attn(self) -> str:
        return str(self.config.get("attn", "unknown"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def labels(self) -> dict[str, Any]:
        labels = self.config.get("labels")
        return labels if isinstance(labels, dict) else {}

    @property
    def role(self) -> str:
        """The suite's label, else inferred: a time budget is the old design's 'time' role."""
        role = self.labels.get("role")
        if role:
            return str(role)
        if ISOTIME_TAG in self.name:
            return ISO_TIME
        if self.config.get("until_plateau"):
            return PLATEAU
        if self.config.get("time_budget_s") and not self.config.get("max_iters"):
            return TIME
        return BASE_ROLE if self.attn == BASELINE else ISO_ITER

    @property
    def attn_role(self) -> str:
        """baseline, ra, ra-variant, control or candidate, as the run folder records it (labels.attn_role)."""
        role = self.labels.get("attn_role")
        return str(role) if role else registry_role(self.attn)

    @property
    def step_ratio(self) -> float | None:
        """The s the suite used to size this run (iso-time runs), from the labels."""
        value = self.labels.get("step_ratio")
        return float(value) if finite(value) else None

    @property
    def scheduled_iters(self) -> int | None:
        """The iterations the run's schedule was sized for (config max_iters); None for a time budget."""
        value = self.config.get("max_iters")
        return int(value) if finite(value) and value > 0 else None

    @property
    def card(self) -> str:
        """gpu name + host: step times, and so pairs, are only comparable on one card."""
        gpu = self.config.get("gpu_name") or self.config.get("device") or "unknown device"
        host = self.config.get("host") or "host not recorded"
        return f"{gpu} @ {host}"

    @property
    def machine_id(self) -> str | None:
        """The physical machine session the run trained on (GPU UUIDs of the node + boot id), as
        the trainer records it; None for older runs."""
        value = self.config.get("machine_id")
        return str(value) if value else None

    @property
    def machine(self) -> str | None:
        """machine_id, else a proxy for older runs: the batch folder plus the run's GPU UUID (one
        card of one session, so two runs with equal proxies shared a machine); None when neither
        is recorded."""
        if self.machine_id is not None:
            return self.machine_id
        uuid = self.config.get("gpu_uuid")
        return f"{self.batch}/{uuid}" if uuid else None

    @property
    def source_hash(self) -> str | None:
        """The hash of the code that trained it (rabench.source_hash); None for older runs."""
        value = self.config.get("source_hash")
        return str(value) if value else None

    @property
    def unit(self) -> tuple[str, str]:
        """(batch, card): pairs form only inside one unit."""
        return (self.batch, self.card)

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def status_word(self) -> str:
        """'finished', 'failed', or 'partial' (started or checkpointed but never finished)."""
        if self.finished:
            return "finished"
        return "failed" if self.state == "failed" else "partial"

    @cached_property
    def evals(self) -> list[dict[str, Any]]:
        """The evaluation records (those with a finite val_loss), in log order."""
        return [m for m in self.metrics if finite(m.get("val_loss"))]

    @property
    def trained_evals(self) -> list[dict[str, Any]]:
        """Evaluations after some training (iteration > 0): the untrained iter-0 eval judges nothing."""
        return [m for m in self.evals if finite(m.get("iter")) and m["iter"] > 0]

    @cached_property
    def summary_mismatch(self) -> str | None:
        """Why a finished run's metrics disagree with its summary.json, else None. The trainer
        evaluates at its last iteration, so the last evaluation logged must be summary's `iters`
        and `final_val_loss`; a metrics.jsonl cut short (its torn last line is dropped) would
        otherwise hand the report an earlier evaluation as the run's final loss."""
        if not self.finished or self.summary is None:
            return None
        iters, final = self.summary.get("iters"), self.summary.get("final_val_loss")
        last = self.final_eval
        at = last.get("iter")
        if last and (not finite(iters) or at == iters) and \
                (not finite(final) or math.isclose(float(last["val_loss"]), float(final), rel_tol=MATCH_TOL, abs_tol=MATCH_TOL)):
            return None
        if not last and not finite(final):
            return None  # never evaluated, and the summary says so: why_not_judged's "no evaluation"
        logged = f"its last evaluation is iteration {at} (val_loss {float(last['val_loss']):.4f})" if last else "it holds no evaluation"
        claimed = f"summary.json has iters {iters}, final_val_loss {float(final):.4f}" if finite(final) else f"summary.json has iters {iters}"
        if not last or finite(iters) and finite(at) and at < iters:
            return f"metrics.jsonl ends before its summary's final evaluation (torn or truncated file): {logged}, {claimed}"
        return f"metrics.jsonl disagrees with its summary.json: {logged}, {claimed}"

    @property
    def judgeable(self) -> bool:
        """Finished, with at least one evaluation after training started, and metrics that agree
        with the summary (a truncated log would move every number without a word)."""
        return self.finished and bool(self.trained_evals) and self.summary_mismatch is None

    @property
    def why_not_judged(self) -> str:
        if not self.finished:
            return f"{self.status_word} (folder state {self.state})"
        return self.summary_mismatch or "no evaluation after iteration 0"

    @property
    def last_record(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    def _summary_or_last(self, key: str, default: float = 0.0) -> float:
        if self.summary is not None and finite(self.summary.get(key)):
            return float(self.summary[key])
        value = self.last_record.get(key)
        return float(value) if finite(value) else default

    @property
    def iters(self) -> int:
        return int(self._summary_or_last("iters", self._summary_or_last("iter")))

    @property
    def tokens(self) -> int:
        return int(self._summary_or_last("tokens"))

    @property
    def train_time_s(self) -> float:
        return self._summary_or_last("train_time_s")

    @property
    def ms_per_iter(self) -> float:
        """Median ms/iter over the run: the summary's, else the median of the log records."""
        if self.summary is not None and finite(self.summary.get("ms_per_iter")):
            return float(self.summary["ms_per_iter"])
        values = [float(m["ms_per_iter"]) for m in self.metrics if finite(m.get("ms_per_iter"))]
        return statistics.median(values) if values else math.nan

    @property
    def final_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}

    @property
    def final_val_loss(self) -> float:
        """The last evaluation's val_loss (NaN if the run never evaluated)."""
        return float(self.final_eval["val_loss"]) if self.evals else math.nan

    @property
    def final_val_se(self) -> float:
        value = self.final_eval.get("val_se")
        return float(value) if finite(value) else math.nan

    @property
    def final_iter(self) -> float:
        return float(self.final_eval.get("iter", math.nan)) if self.evals else math.nan

    @property
    def best_val_loss(self) -> float:
        return min(float(m["val_loss"]) for m in self.evals) if self.evals else math.nan

    def val_rise(self) -> tuple[float, float]:
        """(rise, iteration): the largest rise of val_loss above the best evaluation before it,
        and where it happened; (0, NaN) for a run whose val_loss never went up. A healthy run
        with a decaying learning rate improves at every evaluation, so a rise flags instability."""
        best, worst = math.inf, (0.0, math.nan)
        for m in self.evals:
            value = float(m["val_loss"])
            if value - best > worst[0]:
                worst = (value - best, float(m.get("iter", math.nan)))
            best = min(best, value)
        return worst

    def train_loss_spike(self, window: int = 50) -> tuple[float, float]:
        """(jump, iteration): the largest logged train_loss above the median of the `window`
        log records before it; (0, NaN) with too few records. Logged losses are averages over
        a few steps, so ordinary noise stays well under one nat."""
        if ("spike", window) not in self.cache:  # the report asks more than once; a long run has thousands of records
            losses = [(float(m["train_loss"]), float(m.get("iter", math.nan))) for m in self.metrics if finite(m.get("train_loss"))]
            worst = (0.0, math.nan)
            for i in range(window, len(losses)):
                jump = losses[i][0] - statistics.median(v for v, _ in losses[i - window:i])
                if jump > worst[0]:
                    worst = (jump, losses[i][1])
            self.cache[("spike", window)] = worst
        return self.cache[("spike", window)]

    @property
    def ran_to_plateau(self) -> bool:
        """Did this run stop because val_loss stopped improving (the plan's full test)?"""
        return self.finished and (self.summary or {}).get("stop_reason") == "plateau"

    @cached_property
    def gate_records(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if isinstance(m.get("gates"), dict)]

    def gate_movement(self) -> dict[str, float]:
        """Per gate, max over layers of |w - w_init|, w_init the first logged value (iteration 0)."""
        records = self.gate_records
        out: dict[str, float] = {}
        if len(records) < 2:
            return out
        first, last = records[0]["gates"], records[-1]["gates"]
        for gate in ("w_std", "w_rec", "w_disc"):
            pairs = [(a, b) for a, b in zip(first.get(gate) or [], last.get(gate) or []) if finite(a) and finite(b)]
            if pairs:
                out[gate] = max(abs(b - a) for a, b in pairs)
        return out

    def val_by_source(self) -> dict[str, float]:
        value = self.final_eval.get("val_by_source")
        return {str(k): float(v) for k, v in value.items() if finite(v)} if isinstance(value, dict) else {}


@dataclass
class Batch:
    """One suite folder: its plan, its calibration and its runs."""

    name: str
    path: Path
    plan: dict[str, Any]
    calibration: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def calibrated_ratio(self, attn: str) -> tuple[float, float, float] | None:
        """(s, lo, hi) from calibration.json for one config; else the s the suite sized its
        iso-time runs with (labels.step_ratio, no interval); else None."""
        entry = (self.calibration.get("configs") or {}).get(attn) or {}
        s = entry.get("ratio")
        if not finite(s):
            labelled = [r.step_ratio for r in self.runs if r.attn == attn and finite(r.step_ratio)]
            return (labelled[0], math.nan, math.nan) if labelled else None
        ci = entry.get("ratio_ci95") or [math.nan, math.nan]
        lo, hi = (float(ci[0]), float(ci[1])) if len(ci) == 2 and all(finite(c) for c in ci) else (math.nan, math.nan)
        return float(s), lo, hi

    def gpu_floor(self, attn: str) -> str | None:
        """The kernel's GPU-time floor if the calibration records one (any key naming a floor)."""
        entry = (self.calibration.get("configs") or {}).get(attn) or {}
        for key, value in entry.items():
            if "floor" in key and value is not None:
                return f"{key} {value:.3g}" if finite(value) else f"{key} {value}"
        return None

    @property
    def card_text(self) -> str:
        return str(self.calibration.get("card") or "")

    @property
    def source_hashes(self) -> list[str]:
        """The code versions that made this batch (its runs' and its calibration's); [] when
        none was recorded (batches from before runs recorded one)."""
        found = [r.source_hash for r in self.runs] + [self.calibration.get("source_hash")]
        return sorted({str(h) for h in found if h})


def _read_suite_file(path: Path) -> dict[str, Any]:
    """A plan or calibration file next to the runs (optional); a broken one is a clear error."""
    if not path.is_file():
        return {}
    value = read_json(path)
    if not isinstance(value, dict):
        raise RabenchError(f"{path} is not a valid JSON object")
    return value


def is_run_dir(path: Path) -> bool:
    return RunFolder(path).state() != "absent"


def find_run_dirs(folder: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """The folder itself if it is a run, else run folders below it (campaign/batch/run)."""
    if is_run_dir(folder):
        return [folder]
    if depth == 0:
        return []
    found: list[Path] = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_run_dirs(child, depth - 1)
    return found


def load_batches(folder: str | Path) -> list[Batch]:
    """Every batch (suite folder) under `folder`, each with its runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RabenchError(f"{folder} is not a folder")
    dirs = find_run_dirs(folder)
    if not dirs:
        raise RabenchError(f"no runs in {folder} (a run folder holds config.json)")
    batches: dict[Path, Batch] = {}
    for d in dirs:
        parent = d.parent if d != folder else folder.parent
        if parent not in batches:
            name = "." if parent == folder else str(parent.relative_to(folder)) if parent.is_relative_to(folder) else parent.name
            batches[parent] = Batch(name, parent, _read_suite_file(parent / SUITE_FILE), _read_suite_file(parent / CALIBRATION_FILE))
        batch = batches[parent]
        batch.runs.append(Run.read(d, batch.name))
    return list(batches.values())


def split_suite_batches(batches: list[Batch]) -> tuple[list[Batch], list[Batch]]:
    """(batches to judge, batches set aside). A folder that holds suite batches (suite.json) is a
    campaign: run folders beside them that no suite made (a scaling test, a hand-made run) were
    trained to other budgets and are set aside rather than paired with the suites' runs. A folder
    without any suite is judged whole."""
    suites = [b for b in batches if b.plan]
    if not suites:
        return batches, []
    return suites, [b for b in batches if not b.plan]


def horizon_of(batch: Batch) -> str:
    """How long the batch's suite trained its baseline ('N=8000', '3600 s', 'to a plateau'); '' without
    a suite. Pairs from batches of different horizons measure different things and are never pooled."""
    plan = batch.plan
    if not plan:
        return ""
    if plan.get("until_plateau"):
        return "to a plateau"
    if plan.get("design") == "time" and plan.get("time_budget_s"):
        return f"{float(plan['time_budget_s']):g} s"
    return f"N={plan['max_iters']}" if plan.get("max_iters") else ""


def split_by_horizon(batches: list[Batch]) -> dict[str, list[Batch]]:
    """Batches by horizon, shortest first."""
    out: dict[str, list[Batch]] = {}
    for batch in batches:
        out.setdefault(horizon_of(batch), []).append(batch)
    return dict(sorted(out.items(), key=lambda kv: horizon_sort_key(kv[0])))


def horizon_sort_key(horizon: str) -> tuple[int, float, str]:
    digits = "".join(ch for ch in horizon if ch.isdigit() or ch == ".")
    return (0, float(digits), horizon) if digits else (1, 0.0, horizon)


def load_runs(folder: str | Path) -> list[Run]:
    return [r for b in load_batches(folder) for r in b.runs]


@dataclass
class ConfigGroup:
    """All runs of one attention config in one role (e.g. ra-triton iso-time), across batches."""

    label: str
    attn: str
    role: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def attn_role(self) -> str:
        """The role its run folders record (the first run's; one config has one role)."""
        return self.runs[0].attn_role if self.runs else registry_role(self.attn)

    @property
    def is_ra(self) -> bool:
        return self.attn_role in RA_ROLES

    @property
    def judged(self) -> list[Run]:
        return [r for r in self.runs if r.judgeable]


def options_text(run: Run) -> str:
    options = run.config.get("attn_options") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def config_label(run: Run, multi_option_attns: set[str]) -> str:
    """attn, plus its options where one attn ran with several option sets."""
    return f"{run.attn}({options_text(run)})" if run.attn in multi_option_attns else run.attn


SIDE_ROLES = (ISO_TIME, LADDER, LR_SWEEP)  # runs grouped apart from a config's main runs, under "<label> [<role>]"
ISO_TIME_SUFFIX = f" [{ISO_TIME}]"


def iso_time_label(label: str) -> str:
    """The group label of a config's iso-time runs ('ra-triton' -> 'ra-triton [iso-time]')."""
    return label + ISO_TIME_SUFFIX


def side_label(label: str, role: str) -> str:
    """The group label of a config's runs in a side role ('ra-norec' -> 'ra-norec [ladder]')."""
    return f"{label} [{role}]"


def group_by_config(runs: list[Run]) -> dict[str, ConfigGroup]:
    """Group by (config label, role); iso-time runs get their own group ('ra-triton [iso-time]').
    Ordered: sdpa first, then standard configs, then RA; runs by batch and seed."""
    option_sets: dict[str, set[str]] = {}
    for run in runs:
        option_sets.setdefault(run.attn, set()).add(json.dumps(run.config.get("attn_options") or {}, sort_keys=True))
    multi = {attn for attn, sets in option_sets.items() if len(sets) > 1}
    groups: dict[str, ConfigGroup] = {}
    for run in runs:
        base = config_label(run, multi)
        label = side_label(base, run.role) if run.role in SIDE_ROLES else base
        role = run.role
        groups.setdefault(label, ConfigGroup(label, run.attn, role, [])).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.batch, r.seed, r.name))
    order = sorted(groups, key=lambda lb: (groups[lb].attn != BASELINE, groups[lb].is_ra, groups[lb].role in SIDE_ROLES, lb))
    return {label: groups[label] for label in order}
