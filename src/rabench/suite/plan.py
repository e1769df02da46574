"""The suite's plan: what a plan TOML may say, the command line's settings over it, and the checks
and defaults that make it the plan as it will run (`build_plan`, the one place they meet).

A plan file may override any field of SuitePlan (`time = "1h"` or `iters = N` set the budget); the
command line overrides the file (PlanOverrides); resolve_plan then refuses, in one line, anything the
suite could not run and fills the design's defaults, before any data is prepared or any step timed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rabench import attention
from rabench.errors import RabenchError
from rabench.experiment import BASELINE, PLAN_ATTNS
from rabench.presets import PRESET_RECORDS
from rabench.stats import finite
from rabench.suite.deadline import Deadline
from rabench.training.config import TrainConfig, resolve_device
from rabench.training.timeparse import parse_duration

DESIGNS = ("iso", "time")
# Baseline iterations N when the plan gives none (the preset records own them)
DEFAULT_TIME_S = 3600.0  # the plan's short test, design "time"
# TrainConfig fields the suite sets per run; a plan's [train] table may not set them.
PER_RUN_FIELDS = {"attn", "attn_options", "data", "out", "seed", "max_iters", "time_budget_s", "until_plateau",
                  "resume", "labels", "progress_bar", "attn_ref", "attn_code_hash"}


@dataclass
class SuitePlan:
    """A suite's plan, as a plan TOML writes it (None: a default that resolve_plan fills in)."""

    attns: list[str] = field(default_factory=lambda: list(PLAN_ATTNS))
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str | None = None  # None: gpt2-124m (the CLI picks tiny on a machine without a GPU)
    design: str | None = None  # "iso" | "time"; None: "time" if only a time budget is given, else "iso"
    max_iters: int | None = None  # iso: the baseline's N (default: the preset record's default_iters); time: a cap
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
    # bracketing: where a config's best selection rate is the smallest (largest) it tried, it also
    # trains at half (double) that rate on the selection seeds, up to this many added rates per config
    lr_bracket: int = 0
    # a rate whose verdict already exists elsewhere (e.g. 6e-4, the campaign's): when the selection
    # chooses it for every config, no verdict runs are planned; any other choice runs them
    verdict_exists_at: float | None = None
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


PLAN_TYPES: dict[str, tuple[type, ...]] = {
    "attns": (list,), "seeds": (list,), "preset": (str,), "design": (str,), "until_plateau": (bool,),
    "isotime_attns": (list,), "isoiter_attns": (list,), "ladder": (list,), "lr": (list,),
    "selection_seeds": (list,), "lr_bracket": (int,), "verdict_exists_at": (int, float),
    "calib_steps": (int,), "calib_windows": (int,), "data": (str,),
    "options": (dict,), "train": (dict,), "time": (str, int, float), "iters": (int,), "margin": (int, float, dict),
    "equivalence_margin": (int, float),
}
PLAN_EXAMPLES = {"attns": 'attns = ["sdpa", "ra-triton"]', "seeds": "seeds = [0, 1, 2]",
                 "isotime_attns": 'isotime_attns = ["ra-triton"]', "isoiter_attns": "isoiter_attns = []",
                 "ladder": "ladder = [1.03, 1.06, 1.10, 1.15]", "lr": "lr = [3e-4, 6e-4, 1.2e-3]",
                 "selection_seeds": "selection_seeds = [100, 101]", "lr_bracket": "lr_bracket = 2",
                 "verdict_exists_at": "verdict_exists_at = 6e-4",
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
    for key in ("attns", "seeds", "preset", "until_plateau", "ladder", "lr", "selection_seeds", "lr_bracket",
                "calib_steps", "calib_windows", "options", "train"):
        check_plan_type(key, getattr(plan, key), "suite plan")
    for key in ("isotime_attns", "isoiter_attns", "margin", "equivalence_margin", "data", "verdict_exists_at"):
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
        attention.resolve_options(name, plan.options.get(name) or {}, typed=True)
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


def check_lr_sweep(plan: SuitePlan, design: str) -> None:
    """A sweep needs two rates or more, selection seeds apart from the verdict seeds, the iso design,
    and no [train] lr (each run's rate comes from the sweep); bracketing needs a sweep."""
    if plan.lr_bracket < 0:
        raise RabenchError(f"suite plan: lr_bracket is how many rates a sweep may add beyond its grid's edge: "
                           f"0 or more, got {plan.lr_bracket}")
    if plan.verdict_exists_at is not None and not (finite(plan.verdict_exists_at) and plan.verdict_exists_at > 0):
        raise RabenchError(f"suite plan: verdict_exists_at is a learning rate above 0, got {plan.verdict_exists_at!r}")
    if not plan.lr and not plan.selection_seeds:
        if plan.verdict_exists_at is not None:
            raise RabenchError("suite plan: verdict_exists_at belongs to an lr sweep (it may skip the verdict runs "
                               "at that rate): give --lr with two rates or more and --selection-seeds, or drop it")
        if plan.lr_bracket:
            raise RabenchError("suite plan: lr_bracket extends an lr sweep: give two rates or more (--lr 6e-4,1.2e-3) "
                               "and --selection-seeds, or drop it")
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


def gets_run(listed: list[str] | None, attn: str) -> bool:
    """isotime_attns / isoiter_attns: None means every candidate."""
    return listed is None or attn in listed


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


# ---- the command line over the plan ----------------------------------------------------------
@dataclass
class PlanOverrides:
    """What the command line sets over the plan file, parsed; None (until_plateau: False) keeps the plan's."""

    preset: str | None = None
    attns: list[str] | None = None
    isotime_attns: list[str] | None = None
    isoiter_attns: list[str] | None = None
    ladder: list[float] | None = None
    seeds: list[int] | None = None
    selection_seeds: list[int] | None = None
    lr_bracket: int | None = None
    lr: list[float] | None = None  # one rate: every run trains at it; two or more: an lr sweep
    max_iters: int | None = None  # --iters; replaces the plan's time budget
    time_budget_s: float | None = None  # --time; replaces the plan's iterations
    design: str | None = None
    calib_steps: int | None = None
    calib_windows: int | None = None
    until_plateau: bool = False
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields given on the command line


REPLACED_AS_GIVEN = ("preset", "attns", "isotime_attns", "isoiter_attns", "ladder", "seeds", "selection_seeds",
                     "lr_bracket", "design", "calib_steps", "calib_windows")


def apply_overrides(plan: SuitePlan, given: PlanOverrides) -> SuitePlan:
    """The plan with the command line's settings over it (a budget flag replaces the other budget)."""
    for key in REPLACED_AS_GIVEN:
        if getattr(given, key) is not None:
            setattr(plan, key, getattr(given, key))
    if given.lr is not None:
        if len(given.lr) == 1:  # one rate: every run trains at it
            plan.train["lr"], plan.lr = given.lr[0], []
        else:
            plan.lr = given.lr
    if given.max_iters is not None:
        plan.max_iters, plan.time_budget_s = given.max_iters, None
    if given.time_budget_s is not None:
        plan.time_budget_s, plan.max_iters = given.time_budget_s, None
    plan.until_plateau = plan.until_plateau or given.until_plateau
    plan.train |= given.train
    return plan


def build_plan(path: str | Path | None, given: PlanOverrides, devices: list[str] | None,
               choose_preset: Callable[[str | None, str | None], str]) -> SuitePlan:
    """The plan file (or the default plan) with the command line over it, checked and filled in.

    `choose_preset(preset, device)`: the preset to train (the plan's, or the caller's default for
    the device the runs will use, e.g. a CPU-sized one) - the command line's notices stay its own."""
    plan = apply_overrides(load_plan(path), given)
    device = "cpu" if devices and devices[0] == "cpu" else "cuda" if devices else plan.train.get("device")
    plan.preset = choose_preset(plan.preset, device)
    return resolve_plan(plan)


@dataclass
class SuiteCall:
    """How one call runs the plan: its folder, data and devices, and the command line's switches."""

    out: Path
    data: str
    devices: list[str] | None = None  # one worker process per device; None: the runs go one after another here
    progress_bar: bool = True
    recalibrate: bool = False  # measure the step times again
    reuse_calibration: bool = False  # keep step times measured on another machine, card or code
    calibrate_only: bool = False  # stop once calibration.json is written
    explicit_attns: bool = True  # the attentions were named (a GPU-only one on a CPU is then refused, not left out)
    deadline: Deadline | None = None  # no run is left going after it
    say: Callable[..., None] = print  # the suite's lines (under torchrun: rank 0's alone)
    main_process: bool = True  # rank 0 under torchrun: the one that writes the suite's records
