"""`rabench suite`: the plan's comparison, resumably, into one folder.

Two designs (plan key `design`):

  iso (default)  Equal wall-clock without timing noise (issue 12). First calibrate each config's
                 step time on this card (calibrate.py), giving its ratio s to the baseline. Then
                 train the baseline for N iterations and each candidate twice: for N iterations
                 (iso-iteration, folder `<attn>-s<seed>`) and for round(N/s) iterations (iso-time,
                 folder `<attn>-isotime-s<seed>`). Every run's warm-up and cosine are keyed to its
                 own iteration count, so learning is deterministic given the seed and a run can
                 train on any free card; s comes from the calibration, measured once and reused.
  time           The literal plan: every config for the same measured training time.

`until_plateau` runs every config to a val_loss plateau instead (the budget is a cap).

A suite re-run skips finished runs and resumes checkpointed ones; one whose stored settings
differ from what this suite would train (anything that changes the curve) is refused, so the
folder never mixes runs trained under different settings, and suite.json is written only
after that check. Runs go one after another in this process, or one per device in parallel
worker processes (`devices`, see parallel.py). With several devices and no calibration stored,
the calibration is itself a worker on the first device, and the runs whose length needs no
ratio (the baseline's, the iso-iteration ones) train on the others meanwhile; the iso-time runs
join the queue once it is in.

Files in the suite folder (read by the report):
  suite.json        the resolved plan (design, budgets, attentions, seeds, options, [train]) and
                    "runs": [{name, attn, seed, role, max_iters, time_budget_s, step_ratio}]
  calibration.json  {"card", "host", "device", "compiled", "baseline": "sdpa", "steps_per_window",
                    "windows", "settings" (what a reuse must match), "measured_at",
                    "configs": {attn: {"ms_per_iter", "ms_ci95", "ratio", "ratio_ci95",
                                       "windows_ms", "attn_options"}}}
  calibration.log   the calibration worker's output (when it ran beside the runs)
  <attn>-s<seed>/, <attn>-isotime-s<seed>/   run folders; config.json's labels say the role
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rabench import attention, source_hash
from rabench.errors import RabenchError, RunInterrupted
from rabench.fileio import json_form, write_json_atomic
from rabench.rundir import RunFolder
from rabench.training.config import TrainConfig, curve_changing_differences
from rabench.training.deadline import Deadline, deadline_message
from rabench.training.parallel import SlotTask, run_parallel, sigterm_as_interrupt, spawn
from rabench.training import distributed as dd
from rabench.training.distributed import is_main_process, launched_by_torchrun
from rabench.training.timeparse import parse_duration

BASELINE = "sdpa"
# The plan's four tests (sdpa, open, ra-open, ra-triton) and the two controls: std-gated
# (learned temperature only) and ra-norec (RA with w_rec held at 0: isolates reciprocity).
PLAN_ATTNS = ["sdpa", "open", "ra-open", "ra-triton", "std-gated", "ra-norec"]
DESIGNS = ("iso", "time")
# Baseline iterations N when the plan gives none: the campaign's N for GPT-2 (one device call
# with compilation), a few CPU minutes for the toy presets.
DEFAULT_ITERS = {"gpt2-124m": 8000, "gpt2-350m": 8000, "small": 1000, "tiny": 300, "toy": 300}
DEFAULT_TIME_S = 3600.0  # the plan's short test, design "time"
SUITE_FILE = "suite.json"
CALIBRATION_FILE = "calibration.json"
# TrainConfig fields the suite sets per run; a plan's [train] table may not set them.
PER_RUN_FIELDS = {"attn", "attn_options", "data", "out", "seed", "max_iters", "time_budget_s", "until_plateau",
                  "resume", "labels", "progress_bar"}


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
    calib_steps: int = 10  # optimizer steps per timed calibration window
    calib_windows: int = 8  # timed rounds of interleaved windows
    data: str | None = None
    # fixed before the runs, read by the report: FAIL needs the interval below it (a number for the
    # loss criteria 1 and 3, or a table {"1": m1, "2": m2, "3": m3}); None: 0
    margin: float | dict[str, float] | None = None
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
    role: str  # baseline | iso-iter | iso-time | time | plateau
    max_iters: int | None
    time_budget_s: float | None
    step_ratio: float | None


# ---- the plan -----------------------------------------------------------------------------
PLAN_TYPES: dict[str, tuple[type, ...]] = {
    "attns": (list,), "seeds": (list,), "preset": (str,), "design": (str,), "until_plateau": (bool,),
    "isotime_attns": (list,), "isoiter_attns": (list,), "calib_steps": (int,), "calib_windows": (int,), "data": (str,),
    "options": (dict,), "train": (dict,), "time": (str, int, float), "iters": (int,), "margin": (int, float, dict),
}
PLAN_EXAMPLES = {"attns": 'attns = ["sdpa", "ra-triton"]', "seeds": "seeds = [0, 1, 2]",
                 "isotime_attns": 'isotime_attns = ["ra-triton"]', "isoiter_attns": "isoiter_attns = []",
                 "options": "[options.ra-local] window = 64",
                 "train": "[train] compile = true", "margin": 'margin = 0.01 or [margin] "1" = 0.01'}


def load_plan(path: str | Path | None) -> SuitePlan:
    """The default plan; a TOML file may override any field (`time = "1h"` or `iters = N` set the budget)."""
    plan = SuitePlan()
    if path is None:
        return plan
    p = Path(path)
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
    if key == "seeds" and not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise RabenchError(f"{where}: seeds must be a list of integers >= 0, got {value!r}")
    if key == "margin" and isinstance(value, dict) and not (
            set(value) <= {"1", "2", "3"} and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in value.values())):
        raise RabenchError(f"{where}: margin must be a number or a table of numbers keyed \"1\", \"2\", \"3\" "
                           f"(the criteria), got {value!r}")
    if key == "options" and not all(isinstance(v, dict) for v in value.values()):
        raise RabenchError(f"{where}: options must hold one table per attention, e.g. {PLAN_EXAMPLES['options']}")


def design_of(plan: SuitePlan) -> str:
    if plan.design is not None:
        return plan.design
    return "time" if plan.time_budget_s is not None and plan.max_iters is None else "iso"


def resolve_plan(plan: SuitePlan) -> SuitePlan:
    """Check the plan and fill its defaults (design, budget); returns the plan as it will run."""
    plan.preset = plan.preset if plan.preset is not None else "gpt2-124m"
    for key in ("attns", "seeds", "preset", "until_plateau", "calib_steps", "calib_windows", "options", "train"):
        check_plan_type(key, getattr(plan, key), "suite plan")
    for key in ("isotime_attns", "isoiter_attns", "margin"):
        if getattr(plan, key) is not None:
            check_plan_type(key, getattr(plan, key), "suite plan")
    if not plan.attns:
        raise RabenchError("the suite has no attention to run")
    if not plan.seeds:
        raise RabenchError("the suite has no seed to run")
    for dup_key in ("attns", "seeds"):
        values = getattr(plan, dup_key)
        if len(set(values)) != len(values):
            raise RabenchError(f"suite plan: {dup_key} lists a value twice: {values}")
    for name in plan.attns:
        attention.resolve_options(name, plan.options.get(name))
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
    if design == "iso":
        if plan.time_budget_s is not None and not plan.until_plateau:
            raise RabenchError("the iso design trains for iterations (--iters N); a time budget needs --design time")
        if BASELINE not in plan.attns:
            raise RabenchError(f"the iso design measures every candidate against the baseline {BASELINE!r}: "
                               f"add it to the attentions (e.g. --attn {BASELINE},{plan.attns[0]})")
        plan.max_iters = plan.max_iters if plan.max_iters is not None else DEFAULT_ITERS.get(plan.preset, 1000)
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
    if design == "iso" and not plan.until_plateau:
        idle = [a for a in plan.attns if a != BASELINE and not gets_run(plan.isoiter_attns, a)
                and not gets_run(plan.isotime_attns, a)]
        if idle:
            raise RabenchError(f"suite plan: {', '.join(idle)} would get no run (in neither isoiter_attns nor "
                               "isotime_attns); add it to one or drop it from the attentions")
    plan.design = design
    return plan


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
def run_name(attn: str, seed: int, role: str = "") -> str:
    return f"{attn}-isotime-s{seed}" if role == "iso-time" else f"{attn}-s{seed}"


def gets_run(listed: list[str] | None, attn: str) -> bool:
    """isotime_attns / isoiter_attns: None means every candidate."""
    return listed is None or attn in listed


def iso_time_iters(n: int, ratio: float) -> int:
    """round(N / s), at least one iteration."""
    return max(1, round(n / ratio))


def plan_runs(plan: SuitePlan, ratios: dict[str, float] | None) -> list[PlannedRun]:
    """Every run of the suite, seed by seed (so the first seeds complete first). In the iso design
    without ratios (a calibration still measuring): only the runs whose length needs none."""
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
    return runs


def train_config(plan: SuitePlan, run: PlannedRun, out: Path, data: str, suite_name: str,
                 progress_bar: bool) -> TrainConfig:
    """The TrainConfig of one planned run (labels say its role; they never change the curve)."""
    labels = {"role": run.role, "step_ratio": run.step_ratio, "baseline": BASELINE, "suite": suite_name}
    return TrainConfig(attn=run.attn, data=data, out=str(out / run.name), preset=plan.preset, seed=run.seed,
                       attn_options=dict(plan.options.get(run.attn, {})), time_budget_s=run.time_budget_s,
                       max_iters=run.max_iters, until_plateau=plan.until_plateau, progress_bar=progress_bar,
                       labels=labels, **plan.train)


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
        diffs = curve_changing_differences(folder.config() or {}, cfg)
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
    from rabench.training.calibrate import CalibrationRequest

    base = TrainConfig(attn=BASELINE, data=data, out="", preset=plan.preset, seed=plan.seeds[0],
                       max_iters=plan.max_iters, **plan.train).resolved()
    options = {a: attention.resolve_options(a, plan.options.get(a)) for a in attns}
    return CalibrationRequest(attns=attns, options=options, preset=plan.preset, batch_size=base.batch_size,
                              seq_len=base.seq_len, grad_accum=base.grad_accum, lr=base.lr,
                              weight_decay=base.weight_decay, betas=(base.beta1, base.beta2), grad_clip=base.grad_clip,
                              compile=base.compile, compile_mode=base.compile_mode, data=data, seed=plan.seeds[0],
                              steps=plan.calib_steps, windows=plan.calib_windows)


def read_calibration(out: Path) -> dict[str, Any] | None:
    path = out / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RabenchError(f"{path} is not valid JSON; delete it or pass --recalibrate") from None


def calibrated_ratios(plan: SuitePlan, out: Path, data: str, device, recalibrate: bool,
                      say=print) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Step-time ratio to the baseline per attention, and calibration.json's new content if it changes
    (written by the caller only once the runs on disk agree with the new numbers).

    Measured once and reused. Attentions added to a calibrated suite are measured with the baseline
    in a new interleaved session and merged in; the entries already there (and so every run's
    iteration count) stay.
    """
    from rabench.training.calibrate import calibrate

    stored, attns = stored_calibration(plan, out, data, device, recalibrate, say)
    fresh = None
    if attns:
        announce_calibration(plan, attns, device, say)
        fresh = calibrate(calibration_request(plan, attns, data), device, BASELINE)
    return merge_calibration(plan, data, stored, fresh, say)


def stored_calibration(plan: SuitePlan, out: Path, data: str, device, recalibrate: bool,
                       say=print) -> tuple[dict[str, Any] | None, list[str]]:
    """calibration.json as stored (None when absent or --recalibrate), checked against the plan's
    settings, and the attentions still to measure (with the baseline first; [] when none)."""
    from rabench.training.calibrate import card_name

    stored = None if recalibrate else read_calibration(out)
    req = calibration_request(plan, list(plan.attns), data)
    if stored is not None:
        now, options = json_form(req.settings()), json_form(req.options)  # as calibration.json holds them
        changed = {k: (stored.get("settings", {}).get(k), v) for k, v in now.items()
                   if k in stored.get("settings", {}) and stored["settings"][k] != v}
        changed |= {f"attn_options[{a}]": (stored["configs"][a].get("attn_options"), options[a])
                    for a in plan.attns if a in stored.get("configs", {})
                    and stored["configs"][a].get("attn_options", options[a]) != options[a]}
        if changed:
            what = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise RabenchError(f"{out / CALIBRATION_FILE} was measured with other settings ({what}); "
                               "run with the old settings, use another --out, or pass --recalibrate")
        if stored.get("card") != card_name(device):
            say(f"[suite] calibration.json was measured on {stored.get('card')}, this is {card_name(device)}: "
                "its ratios (and so the iteration counts) are kept; --recalibrate measures again")
        if stored.get("source_hash") not in (None, source_hash()):
            say(f"[suite] calibration.json was measured with other code ({stored['source_hash']}, this is "
                f"{source_hash()}): its ratios are kept; --recalibrate measures again")
    missing = [a for a in plan.attns if stored is None or a not in stored.get("configs", {})]
    return stored, ([BASELINE] + [a for a in missing if a != BASELINE] if missing else [])


def announce_calibration(plan: SuitePlan, attns: list[str], device, say=print) -> None:
    from rabench.training.calibrate import card_name

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
    name = plan.train.get("device", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RabenchError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    return torch.device(name)


def run_suite(plan: SuitePlan, out: str | Path, data: str, progress_bar: bool = True, devices: list[str] | None = None,
              recalibrate: bool = False, explicit_attns: bool = True, calibrate_only: bool = False,
              deadline_s: float | None = None) -> list[Path]:
    """Calibrate (iso design), then train every planned run, skipping finished ones; returns the run folders.

    `explicit_attns`: the attentions were asked for by name (a GPU-only one on a CPU is then an
    error rather than left out with a notice). `calibrate_only`: stop after calibration.json.
    `deadline_s`: seconds from now after which no run is left going (see deadline.py)."""
    deadline = Deadline.after(deadline_s) if deadline_s is not None else None
    out = Path(out)
    say = print if is_main_process() else (lambda *_: None)
    plan = resolve_plan(plan)
    if devices and launched_by_torchrun():
        raise RabenchError("--devices runs one process per device itself; do not start the suite under torchrun")
    if deadline is not None and launched_by_torchrun():
        raise RabenchError("--deadline is not supported under torchrun (ranks could stop at different steps); "
                           "use your scheduler's time limit")
    device = suite_device(plan, devices)
    if devices:  # every worker trains on the device type of its slot; the runs' configs say which
        plan.train = plan.train | {"device": device.type}
    drop_gpu_only(plan, device.type, explicit_attns, say)
    if plan.design == "iso" and plan.attns == [BASELINE]:
        say(f"[suite] only the baseline {BASELINE} is planned: no candidate to calibrate or compare")
    if out.exists() and not out.is_dir():
        raise RabenchError(f"--out {out} is a file, not a folder; choose another --out")
    suite_name = out.resolve().name
    if plan.design == "iso":  # refuse changed settings before spending time on a calibration
        check_runs_before_calibration(plan, out, data, suite_name, recalibrate)
    out.mkdir(parents=True, exist_ok=True)
    ratios, new_calibration, alongside = None, None, None
    if calibrates_alongside(plan, out, devices, recalibrate, calibrate_only):
        alongside = [BASELINE] + [a for a in plan.attns if a != BASELINE]  # everything, measured afresh
        announce_calibration(plan, alongside, device, say)
    elif plan.design == "iso":
        # under torchrun rank 0 alone measures (on its GPU) and every rank plans from its numbers
        info = dd.init_distributed(device.type)
        ratios, new_calibration = dd.broadcast_object(
            dd.on_main(lambda: calibrated_ratios(plan, out, data, device, recalibrate, say), info), info)
    elif calibrate_only:
        raise RabenchError("--calibrate-only belongs to the iso design (the time design needs no calibration)")
    runs = plan_runs(plan, ratios)  # alongside a calibration: the runs whose length needs no ratio
    cfgs = [train_config(plan, r, out, data, suite_name, progress_bar and not devices) for r in runs]
    jobs = decide_jobs(runs, cfgs, out)  # new ratios that contradict trained runs are refused, unwritten
    if is_main_process():  # under torchrun every rank runs the suite; rank 0 alone writes and prints
        if new_calibration is not None:
            write_json_atomic(out / CALIBRATION_FILE, new_calibration, "calibration", default=str)
        if calibrate_only:
            say(f"[suite] step times in {out / CALIBRATION_FILE}; run the suite without --calibrate-only to train")
            return []
        write_suite_record(plan, out, data, runs)
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
        all_runs[:] = plan_runs(plan, new_ratios)
        early = {r.name for r in runs}
        later = [r for r in all_runs if r.name not in early]
        later_jobs = decide_jobs(later, [train_config(plan, r, out, data, suite_name, False) for r in later], out)
        write_json_atomic(out / CALIBRATION_FILE, record, "calibration", default=str)
        write_suite_record(plan, out, data, all_runs)
        if deadline is not None:
            deadline.use_calibration(record)
        return later_jobs

    if devices:
        first = calibration_task(plan, out, data, alongside, len(devices), sized_jobs) if alongside else None
        run_parallel(jobs, devices, say, deadline=deadline, first=first)
    else:
        run_sequential(jobs, say, deadline)
    return [out / r.name for r in all_runs]


def write_suite_record(plan: SuitePlan, out: Path, data: str, runs: list[PlannedRun]) -> None:
    record = plan.to_dict() | {"data": data, "baseline": BASELINE,
                               "runs": [{"name": r.name, "attn": r.attn, "seed": r.seed, "role": r.role,
                                         "max_iters": r.max_iters, "time_budget_s": r.time_budget_s,
                                         "step_ratio": r.step_ratio} for r in runs]}
    write_json_atomic(out / SUITE_FILE, record, "suite record")


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
    """The calibration as a worker process (rabench.training.calibrate) for run_parallel's first slot."""
    request = json.dumps(asdict(calibration_request(plan, attns, data)))
    result = out / "calibration.measuring.json"
    log = out / CALIBRATION_LOG

    def launch(device: str):
        result.unlink(missing_ok=True)
        return spawn(["rabench.training.calibrate", request, BASELINE, str(result)], device, n_workers, log)

    def done(returncode: int) -> list[RunJob]:
        if returncode != 0 or not result.is_file():
            raise RabenchError(f"the step-time calibration failed (exit {returncode}); its output is in {log}")
        fresh = json.loads(result.read_text())
        result.unlink()
        return sized_jobs(fresh)

    return SlotTask("calibration", launch, done)


def check_runs_before_calibration(plan: SuitePlan, out: Path, data: str, suite_name: str, recalibrate: bool) -> None:
    """decide_jobs over every run whose budget is known without a new calibration."""
    stored = None if recalibrate else read_calibration(out)
    known = {a: float(c["ratio"]) for a, c in (stored or {}).get("configs", {}).items()}
    runs = [r for r in plan_runs(plan, {a: known.get(a, 1.0) for a in plan.attns})
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
    return f"{run.role}, {budget}"


def fmt(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"
