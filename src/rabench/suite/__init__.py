"""`rabench suite`: the plan's comparison, resumably, into one folder.

Two designs (plan key `design`):

  iso (default)  Equal wall-clock without timing noise. First calibrate each config's
                 step time on this card (calibrate.py), giving its ratio s to the baseline. Then
                 train the baseline for N iterations and each candidate twice: for N iterations
                 (iso-iteration, folder `<attn>-s<seed>`) and for round(N/s) iterations (iso-time,
                 folder `<attn>-isotime-s<seed>`). Every run's warm-up and cosine are keyed to its
                 own iteration count, so learning is deterministic given the seed and a run can
                 train on any free card; s comes from the calibration, measured once and reused.
  time           The literal plan: every config for the same measured training time.

`until_plateau` runs every config to a val_loss plateau instead (the budget is a cap).

Two additions to the iso design. A length ladder (`ladder`): each candidate with an iso-time run
also trains round(N / r) iterations per listed ratio r, so that its equal-time loss at any step
ratio can be read from real run lengths. A learning-rate sweep (`lr`, `selection_seeds`): stage 1
trains every config for N iterations at each rate on the selection seeds (folders
`<attn>-lr<lr>-s<seed>`); once all have finished, each config's rate is chosen by SWEEP_RULE
(written in suite.json before any run) and stage 2 runs the design above at those rates on the
verdict seeds, which the selection never saw. A call that completes stage 1 goes on to stage 2.

A suite re-run skips finished runs and resumes checkpointed ones; one whose stored settings
differ from what this suite would train (anything that changes the curve) is refused, so the
folder never mixes runs trained under different settings, and suite.json is written only
after that check. Runs go one after another in this process, or one per device in parallel
worker processes (`devices`, see parallel.py). With several devices and no calibration stored,
the calibration is itself a worker on the first device, and the runs whose length needs no
ratio (the baseline's, the iso-iteration ones) train on the others meanwhile; the iso-time runs
join the queue once it is in.

Files in the suite folder (read by the report):
  suite.json        the resolved plan (design, budgets, attentions, seeds, options, [train]),
                    "runs": [{name, attn, seed, role, max_iters, time_budget_s, step_ratio}] and
                    "calibration_reuse": [{flag, at, calibration_measured_at, differences}], one per
                    call that kept a calibration from another machine, card or code
  calibration.json  {"card", "host", "machine_id", "source_hash", "device", "compiled", "baseline": "sdpa",
                    "steps_per_window", "windows", "settings" (what a reuse must match), "measured_at",
                    "configs": {attn: {"ms_per_iter", "ms_ci95", "ratio", "ratio_ci95",
                                       "windows_ms", "attn_options", "attn_code_hash"}}}
  calibration.log   the calibration worker's output (when it ran beside the runs)
  <attn>-s<seed>/, <attn>-isotime-s<seed>/, <attn>-ladder<r>-s<seed>/   run folders; config.json's
                    labels say the role (a ladder run's labels.ladder_ratio is its r)
                    (an iso-iteration run started before the calibration has no step_ratio label)
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rabench import attention, source_hash
from rabench.errors import RabenchError, RunInterrupted
from rabench.experiment import BASELINE, PLAN_ATTNS
from rabench.fileio import json_form, write_json_atomic
from rabench.machine import machine_id
from rabench.presets import PRESET_RECORDS
from rabench.rundir import RunFolder, read_json
from rabench.stats import finite
from rabench.training.config import TrainConfig, curve_changing_differences, resolve_device
from rabench.suite.deadline import Deadline, deadline_message
from rabench.suite.parallel import SlotTask, run_parallel, sigterm_as_interrupt, spawn
from rabench.training import distributed as dd
from rabench.training.distributed import is_main_process, launched_by_torchrun
from rabench.training.timeparse import parse_duration

DESIGNS = ("iso", "time")
# Baseline iterations N when the plan gives none (the preset records own them)
DEFAULT_ITERS = {name: p.default_iters for name, p in PRESET_RECORDS.items()}
DEFAULT_TIME_S = 3600.0  # the plan's short test, design "time"
SUITE_FILE = "suite.json"
CALIBRATION_FILE = "calibration.json"
# TrainConfig fields the suite sets per run; a plan's [train] table may not set them.
PER_RUN_FIELDS = {"attn", "attn_options", "data", "out", "seed", "max_iters", "time_budget_s", "until_plateau",
                  "resume", "labels", "progress_bar", "attn_ref", "attn_code_hash"}


@dataclass
class SuitePlan:
    attns: list[str] = field(default_factory=lambda: list(PLAN_ATTNS))
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str | None = None  # None: gpt2-124m (the CLI picks tiny on a machine without a GPU)
    design: str | None = None  # "iso" | "time"; None: "time" if only a time budget is given, else "iso"
    max_iters: int | None = None  # iso: the baseline's N (default DEFAULT_ITERS[preset]); time: a cap
    time_budget_s: float | None = None  # time: each run's training time (default 1 h)
    until_plateau: bool = False
    isotime_attns: list[str] | None = None  # candidates that also get an iso-time run (None: every one)
    isoiter_attns: list[str] | None = None  # candidates that get an iso-iteration run (None: every one;
    # [] or a subset: the others get their iso-time run alone, e.g. variants judged at equal time only)
    # length ladder (iso design): step ratios r; each candidate with an iso-time run also trains, per
    # seed, for round(N / r) iterations, so equal-time losses are read from real run lengths
    ladder: list[float] = field(default_factory=list)
    # learning-rate sweep (iso design): every config trains N iterations at each rate on the selection
    # seeds; each config's rate is then chosen by SWEEP_RULE and the verdict runs use it on `seeds`
    lr: list[float] = field(default_factory=list)
    selection_seeds: list[int] = field(default_factory=list)
    calib_steps: int = 10  # optimizer steps per timed calibration window
    calib_windows: int = 8  # timed rounds of interleaved windows
    data: str | None = None
    # fixed before the runs, read by the report: FAIL needs the interval below it (a number for the
    # loss criteria 1 and 3, or a table {"1": m1, "2": m2, "3": m3}); None: 0
    margin: float | dict[str, float] | None = None
    # TOST equivalence margin (nats) the report reads beside each per-iteration interval
    equivalence_margin: float = 0.01
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-attention options
    train: dict[str, Any] = field(default_factory=dict)  # other TrainConfig fields, same for every run

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the suite: its folder name, attention, seed, budget and role."""

    name: str
    attn: str
    seed: int
    role: str  # baseline | iso-iter | iso-time | ladder | time | plateau
    max_iters: int | None
    time_budget_s: float | None
    step_ratio: float | None
    ladder_ratio: float | None = None  # a ladder run's r: max_iters = round(N / r)
    lr: float | None = None  # with an lr sweep: the rate this run trains at (else the plan's [train] lr)


# ---- the plan -----------------------------------------------------------------------------
PLAN_TYPES: dict[str, tuple[type, ...]] = {
    "attns": (list,), "seeds": (list,), "preset": (str,), "design": (str,), "until_plateau": (bool,),
    "isotime_attns": (list,), "isoiter_attns": (list,), "ladder": (list,), "lr": (list,),
    "selection_seeds": (list,), "calib_steps": (int,), "calib_windows": (int,), "data": (str,),
    "options": (dict,), "train": (dict,), "time": (str, int, float), "iters": (int,), "margin": (int, float, dict),
    "equivalence_margin": (int, float),
}
PLAN_EXAMPLES = {"attns": 'attns = ["sdpa", "ra-triton"]', "seeds": "seeds = [0, 1, 2]",
                 "isotime_attns": 'isotime_attns = ["ra-triton"]', "isoiter_attns": "isoiter_attns = []",
                 "ladder": "ladder = [1.03, 1.06, 1.10, 1.15]", "lr": "lr = [3e-4, 6e-4, 1.2e-3]",
                 "selection_seeds": "selection_seeds = [100, 101]",
                 "options": "[options.ra-local] window = 64",
                 "train": "[train] compile = true", "margin": 'margin = 0.01 or [margin] "1" = 0.01'}


def load_plan(path: str | Path | None) -> SuitePlan:
    """The default plan; a TOML file may override any field (`time = "1h"` or `iters = N` set the budget)."""
    plan = SuitePlan()
    if path is None:
        return plan
    p = Path(path)
    if p.is_dir():
        raise RabenchError(f"plan file {p} is a folder; give the plan's TOML file")
    if not p.is_file():
        raise RabenchError(f"plan file {p} not found")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RabenchError(f"plan file {p} is not valid TOML: {exc}") from None
    unknown = set(raw) - set(PLAN_TYPES)
    if unknown:
        raise RabenchError(f"plan file {p}: unknown keys {sorted(unknown)}; known: {sorted(PLAN_TYPES)}")
    for key, value in raw.items():
        check_plan_type(key, value, f"plan file {p}")
    if "time" in raw:
        plan.time_budget_s = parse_duration(str(raw.pop("time")))
    if "iters" in raw:
        plan.max_iters = raw.pop("iters")
    for key, value in raw.items():
        setattr(plan, key, value)
    return plan


def check_plan_type(key: str, value: Any, where: str) -> None:
    types = PLAN_TYPES[key]
    if isinstance(value, bool) and bool not in types:
        types = ()
    if not isinstance(value, types):
        example = PLAN_EXAMPLES.get(key, "")
        want = " or ".join("a list" if t is list else "a table" if t is dict else t.__name__ for t in PLAN_TYPES[key])
        raise RabenchError(f"{where}: {key} must be {want}, got {value!r}" + (f" (e.g. {example})" if example else ""))
    if key in ("attns", "isotime_attns", "isoiter_attns") and not all(isinstance(v, str) for v in value):
        raise RabenchError(f"{where}: {key} must be a list of attention names, got {value!r}")
    if key in ("seeds", "selection_seeds") and not all(is_seed(v) for v in value):
        raise RabenchError(f"{where}: {key} must be a list of integers from 0 to 2**63 - 1, got {value!r}")
    if key == "margin" and not (finite(value) or isinstance(value, dict) and set(value) <= {"1", "2", "3"}
                                and all(finite(v) for v in value.values())):
        raise RabenchError(f"{where}: margin must be a finite number or a table of them keyed \"1\", \"2\", \"3\" "
                           f"(the criteria), got {value!r}")
    if key == "equivalence_margin" and not (finite(value) and value > 0):
        raise RabenchError(f"{where}: equivalence_margin must be a finite number > 0 (nats), got {value!r}")
    if key == "ladder" and not all(finite(r) and r > 0 and r != 1 for r in value):
        raise RabenchError(f"{where}: ladder must list step ratios r > 0 other than 1 (each run trains round(N / r) "
                           f"iterations), got {value!r} (e.g. {PLAN_EXAMPLES['ladder']})")
    if key == "lr" and not all(finite(v) and v > 0 for v in value):
        raise RabenchError(f"{where}: lr must list positive learning rates, got {value!r} (e.g. {PLAN_EXAMPLES['lr']})")
    if key == "options" and not all(isinstance(v, dict) for v in value.values()):
        raise RabenchError(f"{where}: options must hold one table per attention, e.g. {PLAN_EXAMPLES['options']}")


def is_seed(value: Any) -> bool:
    """A seed the trainer can use: torch's generators take 0 <= seed < 2**63 (a signed 64-bit int)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def default_iters(plan: SuitePlan) -> int:
    """The iso design's N when the plan gives none; a run to a plateau gets its preset's plateau cap."""
    if plan.preset not in PRESET_RECORDS:
        return 1000  # an unknown preset: TrainConfig refuses it by name later
    record = PRESET_RECORDS[plan.preset]
    return record.plateau_cap_iters if plan.until_plateau else record.default_iters


def design_of(plan: SuitePlan) -> str:
    if plan.design is not None:
        return plan.design
    return "time" if plan.time_budget_s is not None and plan.max_iters is None else "iso"


def resolve_plan(plan: SuitePlan) -> SuitePlan:
    """Check the plan and fill its defaults (design, budget); returns the plan as it will run."""
    plan.preset = plan.preset if plan.preset is not None else "gpt2-124m"
    for key in ("attns", "seeds", "preset", "until_plateau", "ladder", "lr", "selection_seeds", "calib_steps",
                "calib_windows", "options", "train"):
        check_plan_type(key, getattr(plan, key), "suite plan")
    for key in ("isotime_attns", "isoiter_attns", "margin", "equivalence_margin", "data"):
        if getattr(plan, key) is not None:
            check_plan_type(key, getattr(plan, key), "suite plan")
    if not plan.attns:
        raise RabenchError("the suite has no attention to run")
    if not plan.seeds:
        raise RabenchError("the suite has no seed to run")
    for dup_key in ("attns", "seeds", "ladder", "lr", "selection_seeds"):
        values = getattr(plan, dup_key)
        if len(set(values)) != len(values):
            raise RabenchError(f"suite plan: {dup_key} lists a value twice: {values}")
    for name in plan.attns:
        check_plan_options(name, plan.options.get(name) or {})
    folders = [attention.folder_name(a) for a in plan.attns]
    if len(set(folders)) != len(folders):
        raise RabenchError(f"suite plan: attentions {plan.attns} share a folder name ({', '.join(folders)}); "
                           "give the plug-in classes distinct names")
    stray = set(plan.options) - set(plan.attns)
    if stray:
        raise RabenchError(f"suite plan: options given for {sorted(stray)}, which the suite does not run")
    design = design_of(plan)
    if design not in DESIGNS:
        raise RabenchError(f"suite plan: design {design!r} is unknown; choose iso or time")
    train_fields = {f.name for f in fields(TrainConfig)}
    bad = set(plan.train) - train_fields
    if bad:
        raise RabenchError(f"unknown training settings in the plan: {sorted(bad)}")
    per_run = set(plan.train) & PER_RUN_FIELDS
    if per_run:
        raise RabenchError(f"suite plan: [train] may not set {sorted(per_run)}; the suite sets them per run")
    TrainConfig(attn=BASELINE, data="", out="", preset=plan.preset, **plan.train)  # [train]'s types and ranges
    if design == "iso":
        if plan.time_budget_s is not None and not plan.until_plateau:
            raise RabenchError("the iso design trains for iterations (--iters N); a time budget needs --design time")
        if BASELINE not in plan.attns:
            raise RabenchError(f"the iso design measures every candidate against the baseline {BASELINE!r}: "
                               f"add it to the attentions (e.g. --attn {BASELINE},{plan.attns[0]})")
        if plan.max_iters is None:
            plan.max_iters = default_iters(plan)
        if plan.calib_steps < 1 or plan.calib_windows < 2:
            raise RabenchError("calibration needs --calib-steps >= 1 and calib_windows >= 2 (an interval needs two windows)")
    elif plan.time_budget_s is None:
        plan.time_budget_s = DEFAULT_TIME_S
    if plan.max_iters is not None and (isinstance(plan.max_iters, bool) or not isinstance(plan.max_iters, int)
                                       or plan.max_iters < 1):
        raise RabenchError(f"suite plan: iters must be an integer of at least 1, got {plan.max_iters!r}")
    for key in ("isotime_attns", "isoiter_attns"):
        extra = set(getattr(plan, key) or []) - set(plan.attns)
        if extra:
            raise RabenchError(f"suite plan: {key} names {sorted(extra)}, which the suite does not run")
    check_lr_sweep(plan, design)
    if plan.ladder and (design != "iso" or plan.until_plateau):
        raise RabenchError("suite plan: a length ladder belongs to the iso design (iteration budgets), not to "
                           f"{'--until-plateau' if plan.until_plateau else 'design time'}")
    if design == "iso" and not plan.until_plateau:
        idle = [a for a in plan.attns if a != BASELINE and not gets_run(plan.isoiter_attns, a)
                and not gets_run(plan.isotime_attns, a)]
        if idle:
            raise RabenchError(f"suite plan: {', '.join(idle)} would get no run (in neither isoiter_attns nor "
                               "isotime_attns); add it to one or drop it from the attentions")
    plan.design = design
    return plan


SWEEP_RULE = ("each config's learning rate is the one with the best (lowest) mean final val_loss at N over the "
              "selection seeds; ties go to the lower rate; a run whose final val_loss is not finite counts as worst")


def check_plan_options(name: str, options: dict[str, Any]) -> None:
    """A plan's options for one attention have their declared types: the registry checks numbers, lists
    and bools; a string is accepted only where a string is declared (`window = "64"` is a typo in a
    file that has types, unlike --attn-opt's text)."""
    defaults = attention.entry(name).defaults
    for key, value in options.items():
        if isinstance(value, str) and key in defaults and not isinstance(defaults[key], str):
            raise RabenchError(f"suite plan: [options.{name}] {key} = {value!r} is a string; the option takes "
                               f"{type(defaults[key]).__name__} values (e.g. {key} = {defaults[key]!r})")
    attention.resolve_options(name, options)


def check_lr_sweep(plan: SuitePlan, design: str) -> None:
    """A sweep needs two rates or more, selection seeds apart from the verdict seeds, the iso design,
    and no [train] lr (each run's rate comes from the sweep)."""
    if not plan.lr and not plan.selection_seeds:
        return
    if len(plan.lr) < 2:
        raise RabenchError("suite plan: an lr sweep needs two rates or more (e.g. --lr 3e-4,6e-4 with "
                           "--selection-seeds 100,101); one rate goes in --lr alone or [train] lr")
    if not plan.selection_seeds:
        raise RabenchError("suite plan: an lr sweep chooses each config's rate on selection seeds: give "
                           "--selection-seeds (e.g. 100,101), apart from the verdict seeds")
    shared = sorted(set(plan.selection_seeds) & set(plan.seeds))
    if shared:
        raise RabenchError(f"suite plan: seeds {shared} are both selection and verdict seeds; the verdict needs "
                           "fresh seeds (choose selection_seeds apart from seeds)")
    if design != "iso" or plan.until_plateau:
        raise RabenchError("suite plan: an lr sweep belongs to the iso design (it compares final val_loss at N)")
    if "lr" in plan.train:
        raise RabenchError("suite plan: an lr sweep sets each run's rate; drop [train] lr")
    if len({f"{lr:g}" for lr in plan.lr}) < len(plan.lr):
        raise RabenchError(f"suite plan: lr {plan.lr} has rates that print alike in folder names; give distinct rates")


def chosen_rates(plan: SuitePlan, out: Path) -> dict[str, float] | None:
    """Each config's rate by SWEEP_RULE, once every selection run has finished (else None)."""
    if not plan.lr:
        return None
    losses: dict[tuple[str, float], list[float]] = {}
    for run in plan_runs(plan, None):
        folder = RunFolder(out / run.name)
        if folder.state() != "finished":
            return None
        final = (folder.summary() or {}).get("final_val_loss")
        finite = isinstance(final, (int, float)) and math.isfinite(final)
        losses.setdefault((run.attn, run.lr), []).append(final if finite else math.inf)
    mean = {key: sum(v) / len(v) for key, v in losses.items()}
    return {attn: min(plan.lr, key=lambda lr: (mean[attn, lr], lr)) for attn in plan.attns}


def needs_gpu(name: str) -> bool:
    """Does this attention only run on a CUDA GPU (or under TRITON_INTERPRET=1)?"""
    return attention.entry(name).needs_gpu


def drop_gpu_only(plan: SuitePlan, device_type: str, explicit_attns: bool, say=print) -> None:
    """On a CPU the default plan leaves out GPU-only attentions (with a notice); an explicit request fails clearly."""
    if device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    gpu_only = [a for a in plan.attns if needs_gpu(a)]
    if not gpu_only:
        return
    if explicit_attns:
        raise RabenchError(f"{', '.join(gpu_only)} needs a CUDA GPU (or TRITON_INTERPRET=1 set before starting); "
                           "drop it from the attentions on this machine")
    plan.attns = [a for a in plan.attns if a not in gpu_only]
    for key in ("isotime_attns", "isoiter_attns"):
        if getattr(plan, key) is not None:
            setattr(plan, key, [a for a in getattr(plan, key) if a not in gpu_only])
    say(f"[suite] no GPU: leaving out {', '.join(gpu_only)} (needs CUDA); the plan runs {', '.join(plan.attns)}")


# ---- runs ---------------------------------------------------------------------------------
def run_name(attn: str, seed: int, role: str = "", ladder_ratio: float | None = None, lr: float | None = None) -> str:
    """Folder name; a plug-in reference (x/diff.py:DiffAttention) is named by its class (diff-attention)."""
    name = attention.folder_name(attn)
    if role == "ladder":
        return f"{name}-ladder{ladder_ratio:g}-s{seed}"
    if role == "lr-sweep":
        return f"{name}-lr{lr:g}-s{seed}"
    return f"{name}-isotime-s{seed}" if role == "iso-time" else f"{name}-s{seed}"


def gets_run(listed: list[str] | None, attn: str) -> bool:
    """isotime_attns / isoiter_attns: None means every candidate."""
    return listed is None or attn in listed


def iso_time_iters(n: int, ratio: float) -> int:
    """round(N / s), at least one iteration."""
    return max(1, round(n / ratio))


def plan_runs(plan: SuitePlan, ratios: dict[str, float] | None,
              chosen: dict[str, float] | None = None) -> list[PlannedRun]:
    """Every run of the suite, seed by seed (so the first seeds complete first). In the iso design
    without ratios (a calibration still measuring): only the runs whose length needs none. With a
    learning-rate sweep: its selection runs, then the verdict runs at each config's `chosen` rate
    once the selection has chosen (None: not yet)."""
    if not plan.lr:
        return verdict_runs(plan, ratios)
    selection = [PlannedRun(run_name(attn, seed, "lr-sweep", lr=lr), attn, seed, "lr-sweep", plan.max_iters, None,
                            (ratios or {}).get(attn), lr=lr)
                 for seed in plan.selection_seeds for attn in plan.attns for lr in plan.lr]
    if chosen is None:
        return selection
    return selection + [replace(r, lr=chosen[r.attn]) for r in verdict_runs(plan, ratios)]


def verdict_runs(plan: SuitePlan, ratios: dict[str, float] | None) -> list[PlannedRun]:
    """The design's runs on the verdict seeds (every run of a suite without an lr sweep)."""
    runs = []
    for seed in plan.seeds:
        for attn in plan.attns:
            ratio = (ratios or {}).get(attn)
            if plan.until_plateau:
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, "plateau", plan.max_iters, plan.time_budget_s, ratio))
            elif plan.design == "time":
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, "time", plan.max_iters, plan.time_budget_s, ratio))
            elif attn == BASELINE:
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, "baseline", plan.max_iters, None, 1.0))
            else:
                assert plan.max_iters is not None
                if gets_run(plan.isoiter_attns, attn):
                    runs.append(PlannedRun(run_name(attn, seed), attn, seed, "iso-iter", plan.max_iters, None, ratio))
                if ratios is not None and gets_run(plan.isotime_attns, attn):
                    runs.append(PlannedRun(run_name(attn, seed, "iso-time"), attn, seed, "iso-time",
                                           iso_time_iters(plan.max_iters, ratio), None, ratio))
                if gets_run(plan.isotime_attns, attn):
                    runs += ladder_runs(plan, attn, seed, ratio)
    return runs


def ladder_runs(plan: SuitePlan, attn: str, seed: int, ratio: float | None) -> list[PlannedRun]:
    """The candidate's length ladder for one seed: round(N / r) iterations per r, no calibration needed."""
    assert plan.max_iters is not None
    return [PlannedRun(run_name(attn, seed, "ladder", r), attn, seed, "ladder", iso_time_iters(plan.max_iters, r),
                       None, ratio, r) for r in plan.ladder]


def train_config(plan: SuitePlan, run: PlannedRun, out: Path, data: str, suite_name: str,
                 progress_bar: bool) -> TrainConfig:
    """The TrainConfig of one planned run (labels say its role; they never change the curve)."""
    labels = {"role": run.role, "step_ratio": run.step_ratio, "baseline": BASELINE, "suite": suite_name}
    if run.ladder_ratio is not None:
        labels["ladder_ratio"] = run.ladder_ratio
    if run.role == "lr-sweep":
        labels["lr_stage"] = "selection"
    settings = plan.train | ({"lr": run.lr} if run.lr is not None else {})  # a sweep's [train] has no lr
    return TrainConfig(attn=run.attn, data=data, out=str(out / run.name), preset=plan.preset, seed=run.seed,
                       attn_options=dict(plan.options.get(run.attn, {})), time_budget_s=run.time_budget_s,
                       max_iters=run.max_iters, until_plateau=plan.until_plateau, progress_bar=progress_bar,
                       labels=labels, **settings)


@dataclass
class RunJob:
    """A planned run with its config and what the folder needs: 'skip', 'resume' or 'start'."""

    run: PlannedRun
    cfg: TrainConfig
    action: str


def decide_jobs(runs: list[PlannedRun], cfgs: list[TrainConfig], out: Path) -> list[RunJob]:
    """What to do with each run folder; refuses (one line) when a stored run used other settings."""
    jobs, conflicts = [], []
    for run, cfg in zip(runs, cfgs):
        folder = RunFolder(out / run.name)
        state = folder.state()
        if not (state == "finished" or folder.has_checkpoint()):  # nothing worth keeping: started from scratch
            jobs.append(RunJob(run, cfg, "start"))
            continue
        # finished, or a checkpoint to continue from (checkpointed, or failed after a checkpoint)
        # the runs train in this process group: a stored run of 2 processes x grad_accum 1 is 2 x 1 again
        diffs = curve_changing_differences(folder.config() or {}, cfg, world_size=dd.launched_world_size())
        if diffs:
            conflicts.append((run.name, diffs))
        jobs.append(RunJob(run, cfg, "skip" if state == "finished" else "resume"))
    if conflicts:
        name, diffs = conflicts[0]
        more = f" (and {len(conflicts) - 1} more runs)" if len(conflicts) > 1 else ""
        raise RabenchError(f"{out / name} was trained with other settings ({'; '.join(diffs)}){more}: "
                           f"run the suite with its old settings, use another --out, or delete those run folders "
                           f"to start them over")
    return jobs


# ---- calibration --------------------------------------------------------------------------
def calibration_request(plan: SuitePlan, attns: list[str], data: str):
    from rabench.suite.calibrate import CalibrationRequest

    base = TrainConfig(attn=BASELINE, data=data, out="", preset=plan.preset, seed=plan.seeds[0],
                       max_iters=plan.max_iters, **plan.train).resolved()
    options = {a: attention.resolve_options(a, plan.options.get(a)) for a in attns}
    return CalibrationRequest(attns=attns, options=options, preset=plan.preset, batch_size=base.batch_size,
                              seq_len=base.seq_len, grad_accum=base.grad_accum, lr=base.lr,
                              weight_decay=base.weight_decay, betas=(base.beta1, base.beta2), grad_clip=base.grad_clip,
                              compile=base.compile, compile_mode=base.compile_mode, data=data, seed=plan.seeds[0],
                              steps=plan.calib_steps, windows=plan.calib_windows, gate_lr_mult=base.gate_lr_mult)


def read_calibration(out: Path) -> dict[str, Any] | None:
    path = out / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RabenchError(f"{path} is not valid JSON; delete it or pass --recalibrate") from None


def calibrated_ratios(plan: SuitePlan, out: Path, data: str, device, recalibrate: bool,
                      say=print, reuse: bool = False) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Step-time ratio to the baseline per attention, and calibration.json's new content if it changes
    (written by the caller only once the runs on disk agree with the new numbers).

    Measured once and reused on the machine, card and code that measured it (`reuse`: on others
    too). Attentions added to a calibrated suite are measured with the baseline in a new
    interleaved session and merged in; the entries already there (and so every run's iteration
    count) stay.
    """
    from rabench.suite.calibrate import calibrate

    stored, attns = stored_calibration(plan, out, data, device, recalibrate, say, reuse)
    fresh = None
    if attns:
        announce_calibration(plan, attns, device, say)
        fresh = calibrate(calibration_request(plan, attns, data), device, BASELINE)
    return merge_calibration(plan, data, stored, fresh, say)


def stored_calibration(plan: SuitePlan, out: Path, data: str, device, recalibrate: bool,
                       say=print, reuse: bool = False) -> tuple[dict[str, Any] | None, list[str]]:
    """calibration.json as stored (None when absent or --recalibrate), checked against the plan's
    settings and where it was measured, and the attentions still to measure (with the baseline
    first; [] when none)."""
    stored = None if recalibrate else read_calibration(out)
    req = calibration_request(plan, list(plan.attns), data)
    if stored is not None:
        now, options = json_form(req.settings()), json_form(req.options)  # as calibration.json holds them
        changed = {k: (stored.get("settings", {}).get(k), v) for k, v in now.items()
                   if k in stored.get("settings", {}) and stored["settings"][k] != v}
        changed |= {f"attn_options[{a}]": (stored["configs"][a].get("attn_options"), options[a])
                    for a in plan.attns if a in stored.get("configs", {})
                    and stored["configs"][a].get("attn_options", options[a]) != options[a]}
        changed |= {f"attn_code_hash[{a}]": (stored["configs"][a]["attn_code_hash"], attention.entry(a).code_hash)
                    for a in plan.attns if "attn_code_hash" in stored.get("configs", {}).get(a, {})
                    and stored["configs"][a]["attn_code_hash"] != attention.entry(a).code_hash}
        if changed:
            what = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise RabenchError(f"{out / CALIBRATION_FILE} was measured with other settings ({what}); "
                               "run with the old settings, use another --out, or pass --recalibrate")
        check_calibration_origin(stored, out, device, reuse, say)
    missing = [a for a in plan.attns if stored is None or a not in stored.get("configs", {})]
    return stored, ([BASELINE] + [a for a in missing if a != BASELINE] if missing else [])


def calibration_origin_differences(stored: dict[str, Any], device) -> list[str]:
    """'field: stored -> here' for each of machine, card and code in which a stored calibration
    differs from this process's; a field the calibration lacks (older suites) counts as differing,
    since nothing shows that it matches."""
    from rabench.suite.calibrate import card_name

    here = {"machine_id": machine_id(), "card": card_name(device), "source_hash": source_hash()}
    return [f"{k}: {stored.get(k, 'not recorded')} -> {v}" for k, v in here.items() if stored.get(k) != v]


def check_calibration_origin(stored: dict[str, Any], out: Path, device, reuse: bool, say=print) -> None:
    """Step-time ratios hold for the machine, card and code that measured them: refuse them
    elsewhere unless the user asked to reuse them (suite.json then records it)."""
    differences = calibration_origin_differences(stored, device)
    if not differences:
        return
    what = "; ".join(differences)
    if not reuse:
        raise RabenchError(f"{out / CALIBRATION_FILE} was measured on another machine, card or code ({what}): pass "
                           "--recalibrate to measure here (runs trained with other iteration counts are then refused) "
                           "or --reuse-calibration to keep its ratios (suite.json records it)")
    say(f"[suite] --reuse-calibration: keeping the ratios of {CALIBRATION_FILE} measured elsewhere ({what})")


def announce_calibration(plan: SuitePlan, attns: list[str], device, say=print) -> None:
    from rabench.suite.calibrate import card_name

    say(f"[suite] calibrating step time on {card_name(device)}: {', '.join(attns)} "
        f"({plan.calib_windows} interleaved windows of {plan.calib_steps} steps each)")


def merge_calibration(plan: SuitePlan, data: str, stored: dict[str, Any] | None, fresh: dict[str, Any] | None,
                      say=print) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The ratios from the stored calibration with a fresh measurement (of the attentions it lacked)
    merged in; the record to write, or None when nothing was measured."""
    if fresh is None:
        ratios = ", ".join(f"{a} {stored['configs'][a]['ratio']:.3f}" for a in plan.attns if a != BASELINE)
        say(f"[suite] step-time ratios reused from {CALIBRATION_FILE} ({stored.get('card')}, "
            f"{stored.get('measured_at', '?')}): {ratios or '-'}")
        return {a: float(stored["configs"][a]["ratio"]) for a in plan.attns}, None
    options = calibration_request(plan, list(plan.attns), data).options
    attns = list(fresh["configs"])
    for a in attns:
        fresh["configs"][a]["attn_options"] = options[a]
        if attention.entry(a).plugin:  # a changed plug-in file is a changed step (built-ins: source_hash)
            fresh["configs"][a]["attn_code_hash"] = attention.entry(a).code_hash
    if stored is None:
        stored = fresh
    else:
        for a in attns:
            if a not in stored.get("configs", {}):
                stored["configs"][a] = fresh["configs"][a] | {"measured_at": fresh["measured_at"]}
    for a in attns:
        c = stored["configs"][a]
        say(f"[suite]   {a:<12} {c['ms_per_iter']:9.3f} ms/iter  s = {c['ratio']:.3f} "
            f"[{c['ratio_ci95'][0]:.3f}, {c['ratio_ci95'][1]:.3f}]")
    return {a: float(stored["configs"][a]["ratio"]) for a in plan.attns}, stored


# ---- the suite ----------------------------------------------------------------------------
def suite_device(plan: SuitePlan, devices: list[str] | None):
    """The device calibration runs on: the first worker's, or what the runs' --device resolves to."""
    import torch

    if devices:
        if len({d == "cpu" for d in devices}) > 1:
            raise RabenchError(f"--devices {','.join(devices)} mixes the CPU and GPUs; give GPUs or cpu slots, not both")
        if plan.train.get("device", "auto") not in ("auto", "cpu" if devices[0] == "cpu" else "cuda"):
            raise RabenchError(f"--device {plan.train['device']} contradicts --devices {','.join(devices)}; give one")
        return torch.device("cpu") if devices[0] == "cpu" else torch.device("cuda", int(devices[0]))
    return resolve_device(plan.train.get("device", "auto"))


def run_suite(plan: SuitePlan, out: str | Path, data: str, progress_bar: bool = True, devices: list[str] | None = None,
              recalibrate: bool = False, explicit_attns: bool = True, calibrate_only: bool = False,
              deadline_s: float | None = None, reuse_calibration: bool = False) -> list[Path]:
    """Calibrate (iso design), then train every planned run, skipping finished ones; returns the run folders.

    `explicit_attns`: the attentions were asked for by name (a GPU-only one on a CPU is then an
    error rather than left out with a notice). `calibrate_only`: stop after calibration.json.
    `deadline_s`: seconds from now after which no run is left going (see deadline.py).
    `reuse_calibration`: keep a calibration measured on another machine, card or code (recorded in suite.json)."""
    if reuse_calibration and recalibrate:
        raise RabenchError("--reuse-calibration keeps the stored step times and --recalibrate measures them again: "
                           "give one")
    deadline = Deadline.after(deadline_s) if deadline_s is not None else None
    out = Path(out)
    say = print if is_main_process() else (lambda *_: None)
    plan = resolve_plan(plan)
    if devices and launched_by_torchrun():
        raise RabenchError("--devices runs one process per device itself; do not start the suite under torchrun")
    if deadline is not None and launched_by_torchrun():
        raise RabenchError("--deadline is not supported under torchrun (ranks could stop at different steps); "
                           "use your scheduler's time limit")
    if plan.until_plateau and plan.time_budget_s is not None:
        say(f"[suite] --until-plateau with a time budget: {plan.time_budget_s:g} s of training time is each run's cap "
            "(a run that has not plateaued by then stops there, its summary saying 'time budget'); without it "
            "a run stops at its plateau or at --iters")
    device = suite_device(plan, devices)
    if devices:  # every worker trains on the device type of its slot; the runs' configs say which
        plan.train = plan.train | {"device": device.type}
    drop_gpu_only(plan, device.type, explicit_attns, say)
    if plan.design == "iso" and plan.attns == [BASELINE]:
        say(f"[suite] only the baseline {BASELINE} is planned: no candidate to calibrate or compare")
    if out.exists() and not out.is_dir():
        raise RabenchError(f"--out {out} is a file, not a folder; choose another --out")
    suite_name = out.resolve().name
    chosen = chosen_rates(plan, out)  # an lr sweep whose selection is complete: the verdict's rates
    if chosen is not None:
        say(f"[suite] learning rates chosen on selection seeds {plan.selection_seeds}: "
            + ", ".join(f"{a} {lr:g}" for a, lr in chosen.items()))
    if plan.design == "iso":  # refuse changed settings before spending time on a calibration
        check_runs_before_calibration(plan, out, data, suite_name, recalibrate, chosen)
    out.mkdir(parents=True, exist_ok=True)
    ratios, new_calibration, alongside, reused = None, None, None, None
    if calibrates_alongside(plan, out, devices, recalibrate, calibrate_only):
        alongside = [BASELINE] + [a for a in plan.attns if a != BASELINE]  # everything, measured afresh
        announce_calibration(plan, alongside, device, say)
    elif plan.design == "iso":
        # under torchrun rank 0 alone measures (on its GPU) and every rank plans from its numbers
        info = dd.init_distributed(device.type)
        ratios, new_calibration = dd.broadcast_object(
            dd.on_main(lambda: calibrated_ratios(plan, out, data, device, recalibrate, say, reuse_calibration),
                       info), info)
        reused = calibration_reuse_entry(out, device) if reuse_calibration and not recalibrate else None
    elif calibrate_only:
        raise RabenchError("--calibrate-only belongs to the iso design (the time design needs no calibration)")
    runs = plan_runs(plan, ratios, chosen)  # alongside a calibration: the runs whose length needs no ratio
    cfgs = [train_config(plan, r, out, data, suite_name, progress_bar and not devices) for r in runs]
    jobs = decide_jobs(runs, cfgs, out)  # new ratios that contradict trained runs are refused, unwritten
    if is_main_process():  # under torchrun every rank runs the suite; rank 0 alone writes and prints
        if new_calibration is not None:
            write_json_atomic(out / CALIBRATION_FILE, new_calibration, "calibration", default=str)
        if calibrate_only:
            say(f"[suite] step times in {out / CALIBRATION_FILE}; run the suite without --calibrate-only to train")
            return []
        write_suite_record(plan, out, data, runs, reused, chosen)
    if calibrate_only:
        return []
    if deadline is not None:
        deadline.use_calibration(new_calibration or read_calibration(out) or {})
        for job in jobs:  # runs finished by an earlier call tell this one how long start-up takes here
            deadline.learn_from_folder(job.cfg)
    all_runs = list(runs)

    def sized_jobs(fresh: dict[str, Any]) -> list[RunJob]:
        """Once the calibration is in: write it, plan the runs its ratios size, and queue them."""
        new_ratios, record = merge_calibration(plan, data, None, fresh, say)
        all_runs[:] = plan_runs(plan, new_ratios, chosen)
        early = {r.name for r in runs}
        later = [r for r in all_runs if r.name not in early]
        later_jobs = decide_jobs(later, [train_config(plan, r, out, data, suite_name, False) for r in later], out)
        write_json_atomic(out / CALIBRATION_FILE, record, "calibration", default=str)
        write_suite_record(plan, out, data, all_runs, None, chosen)
        if deadline is not None:
            deadline.use_calibration(record)
        return later_jobs

    if devices:
        first = calibration_task(plan, out, data, alongside, len(devices), sized_jobs) if alongside else None
        run_parallel(jobs, devices, say, deadline=deadline, first=first)
    else:
        run_sequential(jobs, say, deadline)
    if chosen is None and chosen_rates(plan, out) is not None:  # the sweep's selection has just completed
        say("[suite] learning-rate selection complete: planning the verdict runs at the chosen rates")
        return run_suite(plan, out, data, progress_bar, devices, explicit_attns=explicit_attns,
                         deadline_s=deadline.left_s() if deadline is not None else None,
                         reuse_calibration=reuse_calibration)
    return [out / r.name for r in all_runs]


def write_suite_record(plan: SuitePlan, out: Path, data: str, runs: list[PlannedRun],
                       reused: dict[str, Any] | None = None, chosen: dict[str, float] | None = None) -> None:
    """suite.json; `reused`: this call kept a calibration from another machine, card or code, added to
    the calls before it that did ("calibration_reuse": what the report names); `chosen`: an lr
    sweep's rates once its selection is complete (the rule is written before any run)."""
    earlier = (read_json(out / SUITE_FILE) or {}).get("calibration_reuse") or []
    if reused and any(e.get("calibration_measured_at") == reused["calibration_measured_at"]
                      and e.get("differences") == reused["differences"] for e in earlier):
        reused = None  # the same calibration kept across the same differences: noted once
    sweep = {"lr_sweep": {"lrs": plan.lr, "selection_seeds": plan.selection_seeds, "rule": SWEEP_RULE,
                          "chosen": chosen or {}}} if plan.lr else {}
    record = plan.to_dict() | {"data": data, "baseline": BASELINE,
                               "runs": [{"name": r.name, "attn": r.attn, "seed": r.seed, "role": r.role,
                                         "max_iters": r.max_iters, "time_budget_s": r.time_budget_s,
                                         "step_ratio": r.step_ratio}
                                        | ({"ladder_ratio": r.ladder_ratio} if r.ladder_ratio is not None else {})
                                        | ({"lr": r.lr} if r.lr is not None else {})
                                        for r in runs],
                               "calibration_reuse": earlier + ([reused] if reused else [])} | sweep
    write_json_atomic(out / SUITE_FILE, record, "suite record")


def calibration_reuse_entry(out: Path, device) -> dict[str, Any] | None:
    """suite.json's note of a --reuse-calibration call on another machine, card or code (None: same origin)."""
    stored = read_calibration(out)
    differences = calibration_origin_differences(stored, device) if stored else []
    if not differences:
        return None
    return {"flag": "--reuse-calibration", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "calibration_measured_at": stored.get("measured_at"), "differences": differences}


def calibrates_alongside(plan: SuitePlan, out: Path, devices: list[str] | None, recalibrate: bool,
                         calibrate_only: bool) -> bool:
    """Measure a fresh calibration in a worker on the first device while the runs that need no
    step ratio (the baseline's, the iso-iteration ones) train on the others: with several devices,
    an iso design with a candidate, and nothing stored to reuse. The calibration's windows are then
    timed beside training on the other GPUs (separate cards; the ratio comes from interleaved
    windows on one card, so a shared slowdown cancels)."""
    return (plan.design == "iso" and bool(devices) and len(devices) > 1 and not calibrate_only
            and any(a != BASELINE for a in plan.attns) and (recalibrate or read_calibration(out) is None))


CALIBRATION_LOG = "calibration.log"


def calibration_task(plan: SuitePlan, out: Path, data: str, attns: list[str], n_workers: int,
                     sized_jobs: Callable[[dict[str, Any]], list[RunJob]]) -> SlotTask:
    """The calibration as a worker process (rabench.suite.calibrate) for run_parallel's first slot."""
    request = json.dumps(asdict(calibration_request(plan, attns, data)))
    result = out / "calibration.measuring.json"
    log = out / CALIBRATION_LOG

    def launch(device: str):
        result.unlink(missing_ok=True)
        return spawn(["rabench.suite.calibrate", request, BASELINE, str(result)], device, n_workers, log)

    def done(returncode: int) -> list[RunJob]:
        if returncode != 0 or not result.is_file():
            raise RabenchError(f"the step-time calibration failed (exit {returncode}); its output is in {log}")
        fresh = json.loads(result.read_text())
        result.unlink()
        return sized_jobs(fresh)

    return SlotTask("calibration", launch, done)


def check_runs_before_calibration(plan: SuitePlan, out: Path, data: str, suite_name: str, recalibrate: bool,
                                  chosen: dict[str, float] | None = None) -> None:
    """decide_jobs over every run whose budget is known without a new calibration."""
    stored = None if recalibrate else read_calibration(out)
    known = {a: float(c["ratio"]) for a, c in (stored or {}).get("configs", {}).items()}
    runs = [r for r in plan_runs(plan, {a: known.get(a, 1.0) for a in plan.attns}, chosen)
            if r.role != "iso-time" or r.attn in known]
    decide_jobs(runs, [train_config(plan, r, out, data, suite_name, False) for r in runs], out)


def run_sequential(jobs: list[RunJob], say=print, deadline: Deadline | None = None) -> None:
    """Train the runs one after another in this process (and, under torchrun, in every rank).

    With a deadline, a run starts only if it can finish in time, and at the deadline this process
    sends itself SIGTERM: the run in training checkpoints and stops (see deadline.py)."""
    from rabench.training.trainer import train

    todo = [job for job in jobs if job.action != "skip"]
    for job in jobs:
        if job.action == "skip":
            say(f"[suite] {job.run.name}: done, skipped")
    not_started: list[str] = []
    if deadline is not None and deadline.passed():  # a calibration used it up: a timer at 0 s would interrupt anywhere
        raise deadline_message([job.run.name for job in todo], [])
    with stop_at(deadline):
        for i, job in enumerate(todo):
            name = job.run.name
            job.cfg.resume = job.action == "resume"
            if deadline is not None and not deadline.fits(job.cfg):
                say(f"[suite] {name}: not started, it would not finish before the deadline")
                not_started.append(name)
                continue
            say(f"[suite] {name}: {'resuming' if job.cfg.resume else 'starting'} ({describe(job.run)})")
            started, expected = time.time(), deadline.training_s(job.cfg) if deadline is not None else None
            try:
                summary = train(job.cfg)
            except (RunInterrupted, KeyboardInterrupt):
                if deadline is None or not deadline.passed():
                    raise
                raise deadline_message(not_started + [j.run.name for j in todo[i + 1:]], [name]) from None
            if deadline is not None:
                deadline.learn(job.cfg, time.time() - started, expected)
            say(f"[suite] {name}: {summary['iters']} iters, val {fmt(summary.get('final_val_loss'))}, "
                f"{summary.get('ms_per_iter')} ms/iter")
    if not_started:
        raise deadline_message(not_started, [])


@contextmanager
def stop_at(deadline: Deadline | None):
    """SIGTERM to this process at the deadline (the trainer checkpoints on it; between runs it
    raises KeyboardInterrupt); restores the signal handler after."""
    if deadline is None:
        yield
        return
    previous = sigterm_as_interrupt()
    timer = threading.Timer(max(0.0, deadline.left_s()), os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def describe(run: PlannedRun) -> str:
    budget = f"{run.max_iters} iters" if run.max_iters is not None else f"{run.time_budget_s:g} s"
    if run.role == "iso-time":
        return f"{run.role}, {budget} = N / {run.step_ratio:.3f}"
    rate = f", lr {run.lr:g}" if run.lr is not None else ""
    if run.role == "ladder":
        return f"{run.role}, {budget} = N / {run.ladder_ratio:g}{rate}"
    return f"{run.role}, {budget}{rate}"


def fmt(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"
