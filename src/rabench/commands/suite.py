"""`rabench suite`: the plan's comparison, resumably, into one folder, then the report."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING

from rabench.commands.common import GPT2, TINY, add_hyper_args, train_config_kwargs
from rabench.errors import DeadlineReached, RabenchError
from rabench.presets import PLATEAU_CAP_FACTOR, PRESET_RECORDS

if TYPE_CHECKING:
    from rabench.suite.plan import PlanOverrides, SuitePlan

HELP = "calibrate step times, train the plan's configs (resumable, optionally one per GPU) and write the report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Default design 'iso' (equal wall-clock without timing noise): measure each config's step time against "
        "sdpa on this card (interleaved windows, 95% intervals; saved in calibration.json and reused), then train "
        "sdpa for N iterations and each candidate for N (iso-iteration) and round(N/s) iterations (iso-time, "
        "folder <attn>-isotime-s<seed>). Design 'time' (--time): every config for the same training time.")
    p.add_argument("plan", nargs="?", help="plan TOML (default plan: sdpa, open, ra-open, ra-triton, std-gated, ra-norec; "
                   "gpt2-124m; design iso)")
    p.add_argument("--out", required=True, help="suite folder (a re-run resumes it; changed settings are refused)")
    p.add_argument("--attn", help="comma-separated attention names or module:Class / file.py:Class references "
                   "(overrides the plan; iso needs sdpa among them)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the plan's, 0)")
    p.add_argument("--data", help="prepared data folder (default: the bundled Austen corpus, prepared into the suite)")
    p.add_argument("--design", choices=["iso", "time"],
                   help="iso (default): iteration budgets from a step-time calibration; time: equal training time")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, metavar="N",
                        help=f"iso design: the baseline's iterations N (default: {GPT2.default_iters} for gpt2-*, "
                             f"{PRESET_RECORDS['small'].default_iters} small, {TINY.default_iters} tiny); with "
                             f"--until-plateau a cap (default: {PLATEAU_CAP_FACTOR}x those, {GPT2.plateau_cap_iters} "
                             "for gpt2-*)")
    budget.add_argument("--time", help="design time: training time per run, e.g. 90s, 10m, 1h (default 1h)")
    p.add_argument("--isotime-attn", help="comma-separated candidates that get an iso-time run, or none "
                   "(default: every candidate)")
    p.add_argument("--isoiter-attn", help="comma-separated candidates that get an iso-iteration run, or none: the "
                   "others are judged at equal time alone, half the runs (default: every candidate)")
    p.add_argument("--ladder", metavar="R1,R2,...",
                   help="length ladder: each candidate with an iso-time run also trains round(N/r) iterations per "
                        "seed for each step ratio r, e.g. 1.03,1.06,1.10,1.15, or none (default: the plan's, none)")
    p.add_argument("--lr", metavar="LR[,LR...]",
                   help=f"peak learning rate (default: the preset's; {GPT2.lr:g} for gpt2-124m, {TINY.lr:g} for "
                        "tiny); two or "
                        "more, e.g. 3e-4,6e-4,1.2e-3, make an lr sweep: each config's rate is chosen on "
                        "--selection-seeds, then the verdict runs at it on --seeds")
    p.add_argument("--selection-seeds", help="an lr sweep's selection seeds, apart from --seeds, e.g. 100,101 "
                   "(default: the plan's)")
    p.add_argument("--lr-bracket", type=int, metavar="K",
                   help="an lr sweep whose best rate for a config is the smallest (largest) it tried also trains "
                        "that config at half (double) the rate on the selection seeds, up to K added rates per "
                        "config, before choosing (default: the plan's, 0: the grid alone)")
    p.add_argument("--until-plateau", action="store_true",
                   help="full test: each config runs to a val_loss plateau (the budget is a cap)")
    p.add_argument("--devices", help="run independent runs in parallel, one worker process per device: GPU indices "
                   "(0,1,2,3) or CPU slots (cpu,cpu); each run logs to train.log in its folder (default: one after another)")
    p.add_argument("--deadline", help="stop by this time from now, e.g. 9m or 2h (a lease, a SLURM allocation): a run "
                   "starts only if its estimate fits in the time left (one with no estimate, a run to a plateau, "
                   "only while twice its start-up estimate is left), runs still going at the deadline checkpoint "
                   "and stop; exit 124 when runs are left, and the same command continues them (default: none)")
    calibration = p.add_mutually_exclusive_group()
    calibration.add_argument("--recalibrate", action="store_true",
                             help="measure step times again instead of reusing calibration.json (runs already "
                                  "trained with other iteration counts are then refused)")
    calibration.add_argument("--reuse-calibration", action="store_true",
                             help="keep calibration.json's step times although another machine, card or code "
                                  "measured them (default: refused there when they would size an iso-time run "
                                  "not yet started; suite.json records the reuse)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="measure step times into calibration.json and stop (e.g. before a torchrun or parallel launch)")
    p.add_argument("--calib-steps", type=int, help="optimizer steps per calibration window (default 10)")
    p.add_argument("--calib-windows", type=int, help="interleaved calibration rounds, at least 2 (default 8)")
    add_hyper_args(p, skip=("--lr",))


def split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def attn_list(text: str) -> list[str]:
    """--isotime-attn / --isoiter-attn: comma-separated names, or `none` for the empty list."""
    return [] if text.strip().lower() == "none" else split_list(text)


def seed_list(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in split_list(text)]
    except ValueError:
        raise RabenchError(f"{flag} {text!r}: write comma-separated integers, e.g. 0,1,2") from None


def number_list(text: str, flag: str, example: str) -> list[float]:
    """Comma-separated numbers (`none`: the empty list); checked further by the plan's validation."""
    try:
        return [float(s) for s in attn_list(text)]
    except ValueError:
        raise RabenchError(f"{flag} {text!r}: write comma-separated numbers, e.g. {example}") from None


def given_train_settings(a: argparse.Namespace) -> dict:
    """TrainConfig fields set on the command line; TrainConfig's own defaults (warm-up as a share of each
    run's length, eval tokens per preset) apply to the rest."""
    from rabench.training.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    kw = train_config_kwargs(a)
    for key in ("preset", "progress_bar", "time_budget_s", "max_iters", "lr"):  # --lr: see plan_overrides()
        kw.pop(key, None)
    return {k: v for k, v in kw.items() if v is not None and not (k in defaults and defaults[k] == v)}


def plan_overrides(a: argparse.Namespace) -> PlanOverrides:
    """The plan settings given on the command line, parsed (a bad value is refused in one line)."""
    from rabench.suite.plan import PlanOverrides
    from rabench.training.timeparse import parse_duration

    if a.iters is not None and a.iters < 1:
        raise RabenchError("--iters must be at least 1")
    return PlanOverrides(
        preset=a.preset,
        attns=split_list(a.attn) if a.attn is not None else None,
        isotime_attns=attn_list(a.isotime_attn) if a.isotime_attn is not None else None,
        isoiter_attns=attn_list(a.isoiter_attn) if a.isoiter_attn is not None else None,
        ladder=number_list(a.ladder, "--ladder", "1.03,1.06,1.10") if a.ladder is not None else None,
        seeds=seed_list(a.seeds, "--seeds") if a.seeds is not None else None,
        selection_seeds=seed_list(a.selection_seeds, "--selection-seeds") if a.selection_seeds is not None else None,
        lr=number_list(a.lr, "--lr", "3e-4,6e-4,1.2e-3") if a.lr is not None else None, lr_bracket=a.lr_bracket,
        max_iters=a.iters, time_budget_s=parse_duration(a.time) if a.time is not None else None, design=a.design,
        calib_steps=a.calib_steps, calib_windows=a.calib_windows, until_plateau=a.until_plateau,
        train=given_train_settings(a))


def choose_preset(preset: str | None, device: str | None) -> str:
    """The plan's preset, else the default for the device (tiny on a CPU, said in a notice)."""
    from rabench.commands.common import default_preset, warn_if_slow

    preset = preset if preset is not None else default_preset(device)
    warn_if_slow(preset, device)
    return preset


def run(a: argparse.Namespace) -> None:
    from rabench.experiment import PLAN_ATTNS
    from rabench.suite import run_suite
    from rabench.suite.parallel import RunsFailed, parse_devices
    from rabench.suite.plan import build_plan
    from rabench.training.distributed import is_main_process
    from rabench.training.timeparse import parse_duration

    given = plan_overrides(a)
    deadline_s = parse_duration(a.deadline) if a.deadline is not None else None  # a bad duration fails before any work
    devices = parse_devices(a.devices) if a.devices is not None else None
    plan = build_plan(a.plan, given, devices, choose_preset)  # a bad plan fails before any data is prepared
    try:
        run_suite(plan, a.out, suite_data(a, plan), progress_bar=not a.no_progress, devices=devices, recalibrate=a.recalibrate,
                  explicit_attns=plan.attns != PLAN_ATTNS, calibrate_only=a.calibrate_only, deadline_s=deadline_s,
                  reuse_calibration=a.reuse_calibration)
    except (RunsFailed, DeadlineReached):
        try:
            write_report(a.out)  # what finished is still reported; what did not is named below
        except RabenchError as exc:  # e.g. no run folder yet: the suite's own message matters more
            print(f"[suite] no report: {exc}")
        raise
    if is_main_process() and not a.calibrate_only:
        write_report(a.out)


def suite_data(a: argparse.Namespace, plan: SuitePlan) -> str:
    """--data, else the plan's, else the bundled Austen corpus prepared into the suite folder."""
    from rabench.training.distributed import launched_by_torchrun

    data = a.data if a.data is not None else plan.data
    if data is not None:
        return data
    if launched_by_torchrun():
        raise RabenchError("under torchrun, prepare the data first and pass --data DIR")
    from rabench.data import prepare_bundled_austen

    return prepare_bundled_austen(Path(a.out))


def write_report(out: str) -> None:
    from rabench.analysis import write_report as report

    report(out)  # prints where it wrote
