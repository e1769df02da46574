"""`rabench suite`: the plan's comparison, resumably, into one folder.

Two designs (plan key `design`):

  iso (default)  Equal wall-clock without timing noise. First calibrate each config's
                 step time on this card (ratios.py, calibrate.py), giving its ratio s to the baseline. Then
                 train the baseline for N iterations and each candidate twice: for N iterations
                 (iso-iteration, folder `<attn>-s<seed>`) and for round(N/s) iterations (iso-time,
                 folder `<attn>-isotime-s<seed>`). Every run's warm-up and cosine are keyed to its
                 own iteration count, and its data order and initialisation to its seed, so a run
                 can train on any free card (same-seed reruns still differ a little: GPU kernels
                 are not bitwise repeatable); s comes from the calibration, measured once and reused.
  time           The literal plan: every config for the same measured training time.

`until_plateau` runs every config to a val_loss plateau instead (the budget is a cap); no run is
then sized by a step ratio, so nothing is calibrated.

Two additions to the iso design. A length ladder (`ladder`): each candidate with an iso-time run
also trains round(N / r) iterations per listed ratio r, so that its equal-time loss at any step
ratio can be read from real run lengths. A learning-rate sweep (`lr`, `selection_seeds`): stage 1
trains every config for N iterations at each rate on the selection seeds (folders
`<attn>-lr<lr>-s<seed>`); once all have finished, each config's rate is chosen by SWEEP_RULE
(written in suite.json before any run) and stage 2 runs the design above at those rates on the
verdict seeds, which the selection never saw. With `lr_bracket` = K, a config whose best rate is
the smallest (largest) it has tried also trains at half (double) that rate, up to K added rates,
before its rate is chosen (BRACKET_RULE). A call that completes stage 1 goes on to stage 2, unless
every config chose the plan's `verdict_exists_at` (a verdict at that rate exists elsewhere).

A suite re-run skips finished runs and resumes checkpointed ones; one whose stored settings
differ from what this suite would train (anything that changes the curve) is refused, so the
folder never mixes runs trained under different settings, and suite.json is written only
after that check. Runs go one after another in this process, or one per device in parallel
worker processes (`devices`, see parallel.py). With several devices and no calibration stored,
the calibration is itself a worker on the first device, and the runs whose length needs no
ratio (the baseline's, the iso-iteration ones) train on the others meanwhile; the iso-time runs
join the queue once it is in.

run_suite goes in four phases, each the concern of one module:
  plan.py      resolve the plan: the plan file, the command line over it, its checks and defaults
  ratios.py    get the step ratios: calibration.json's, or measured (calibrate.py)
  jobs.py      decide the jobs: every planned run and what its folder needs (start, resume, skip)
  execute.py   train them: here one after another, or one worker per device (parallel.py), within
               a deadline (deadline.py)
folder.py owns the suite folder: its files (suite.json, calibration.json), run names and roles.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError
from rabench.experiment import BASELINE
from rabench.suite.deadline import Deadline
from rabench.suite.execute import run_jobs
from rabench.suite.folder import CALIBRATION_FILE, write_calibration
from rabench.suite.jobs import (PlannedRun, RunJob, Sweep, check_runs_before_calibration, decide, plan_runs,
                                record_suite, split_machine_notices, sweep_state, verdict_elsewhere)
from rabench.suite.plan import SuiteCall, SuitePlan, drop_gpu_only, resolve_plan, suite_device
from rabench.suite.ratios import StepRatios, calibration_task, merge_calibration, step_ratios
from rabench.training.distributed import is_main_process, launched_by_torchrun

__all__ = ["SuiteCall", "SuitePlan", "run_suite"]


def run_suite(plan: SuitePlan, out: str | Path, data: str, progress_bar: bool = True, devices: list[str] | None = None,
              recalibrate: bool = False, explicit_attns: bool = True, calibrate_only: bool = False,
              deadline_s: float | None = None, reuse_calibration: bool = False) -> list[Path]:
    """Calibrate (iso design), then train every planned run, skipping finished ones; returns the run folders.

    `explicit_attns`: the attentions were asked for by name (a GPU-only one on a CPU is then an
    error rather than left out with a notice). `calibrate_only`: stop after calibration.json.
    `deadline_s`: seconds from now after which no run is left going (see deadline.py).
    `reuse_calibration`: keep a calibration measured on another machine, card or code (recorded in suite.json).
    An lr sweep that moves on in this call (bracketing adds a rate, or the selection completes)
    goes on to the runs that opens: the added rate's, then the verdict's."""
    if reuse_calibration and recalibrate:
        raise RabenchError("--reuse-calibration keeps the stored step times and --recalibrate measures them again: "
                           "give one")
    main = is_main_process()  # under torchrun every rank runs the suite; rank 0 alone writes and prints
    call = SuiteCall(Path(out), data, devices, progress_bar, recalibrate, reuse_calibration, calibrate_only,
                     explicit_attns, Deadline.after(deadline_s) if deadline_s is not None else None,
                     print if main else (lambda *_: None), main)
    while True:
        folders, moved = run_phases(plan, call)
        if not moved:
            return folders
        call = replace(call, recalibrate=False)


def run_phases(plan: SuitePlan, call: SuiteCall) -> tuple[list[Path], bool]:
    """Resolve the plan, get the step ratios, decide the jobs, execute them; returns the run folders
    and whether an lr sweep moved on in this call (bracketing added a rate, or the selection
    completed): its new runs are then to plan. Each move adds a rate (at most lr_bracket per
    config) or chooses (once), so the caller's loop ends."""
    plan, device, sweep = resolve_for_call(plan, call)
    ratios = step_ratios(plan, call, device)
    # new ratios that contradict runs on disk are refused here, before calibration.json is written
    runs, jobs = decide(plan, call, ratios.ratios, sweep)
    if call.main_process:
        write_records(plan, call, ratios, runs, sweep)
        if not call.calibrate_only:
            for notice in split_machine_notices(jobs, call.out):
                call.say(notice)
    if call.calibrate_only:
        return [], False
    planned = list(runs)  # the runs sized by a calibration alongside join once it is in
    first = None
    if ratios.alongside:
        later = partial(size_later_runs, plan, call, sweep, planned)
        first = calibration_task(plan, call.out, call.data, ratios.alongside, len(call.devices), later)
    run_jobs(jobs, call, ratios.new_record, first)
    return [call.out / r.name for r in planned], sweep.chosen is None and sweep_moved(plan, call, sweep)


def sweep_moved(plan: SuitePlan, call: SuiteCall, before: Sweep) -> bool:
    """Has the lr sweep moved on since `before` (the phase's start)? Said in a line when it has."""
    rates, chosen = sweep_state(plan, call.out)
    if chosen is not None:
        if verdict_elsewhere(plan, chosen):
            call.say(f"[suite] learning-rate selection complete: every config chose {plan.verdict_exists_at:g}, where "
                     "the plan says a verdict exists already (verdict_exists_at): no verdict runs are planned")
        else:
            call.say("[suite] learning-rate selection complete: planning the verdict runs at the chosen rates")
        return True  # the next phase records the choice in suite.json (and plans the verdict, if any)
    added = {attn: [lr for lr in rates[attn] if lr not in before.rates[attn]] for attn in rates}
    added = {attn: lrs for attn, lrs in added.items() if lrs}
    if added:
        call.say("[suite] the best rate lies at the edge of the rates tried: bracketing adds "
                 + "; ".join(f"{attn} {', '.join(f'{lr:g}' for lr in lrs)}" for attn, lrs in added.items()))
    return bool(added)


def resolve_for_call(plan: SuitePlan, call: SuiteCall) -> tuple[SuitePlan, Any, Sweep]:
    """The plan as it will run on this machine and in this folder: checked, its device (torch.device)
    and an lr sweep's state (its rates so far and, once the selection is complete, the chosen ones);
    refuses runs on disk that other settings trained before any time goes into a calibration."""
    plan = resolve_plan(plan)
    if call.devices and launched_by_torchrun():
        raise RabenchError("--devices runs one process per device itself; do not start the suite under torchrun")
    if call.deadline is not None and launched_by_torchrun():
        raise RabenchError("--deadline is not supported under torchrun (ranks could stop at different steps); "
                           "use your scheduler's time limit")
    if plan.until_plateau and plan.time_budget_s is not None:
        call.say(f"[suite] --until-plateau with a time budget: {plan.time_budget_s:g} s of training time is each "
                 "run's cap (a run that has not plateaued by then stops there, its summary saying 'time budget'); "
                 "without it a run stops at its plateau or at --iters")
    device = suite_device(plan, call.devices)
    if call.devices:  # every worker trains on the device type of its slot; the runs' configs say which
        plan.train = plan.train | {"device": device.type}
    drop_gpu_only(plan, device.type, call.explicit_attns, call.say)
    if plan.design == "iso" and plan.attns == [BASELINE]:
        call.say(f"[suite] only the baseline {BASELINE} is planned: no candidate to calibrate or compare")
    if call.out.exists() and not call.out.is_dir():
        raise RabenchError(f"--out {call.out} is a file, not a folder; choose another --out")
    sweep = sweep_state(plan, call.out)  # an lr sweep whose selection is complete: the verdict's rates chosen
    if sweep.chosen is not None:
        call.say(f"[suite] learning rates chosen on selection seeds {plan.selection_seeds}: "
                 + ", ".join(f"{a} {lr:g}" for a, lr in sweep.chosen.items()))
    if plan.design == "iso":  # refuse changed settings before spending time on a calibration
        check_runs_before_calibration(plan, call, sweep)
    call.out.mkdir(parents=True, exist_ok=True)
    return plan, device, sweep


def write_records(plan: SuitePlan, call: SuiteCall, ratios: StepRatios, runs: list[PlannedRun],
                  sweep: Sweep) -> None:
    """calibration.json when it changed, then suite.json (not with --calibrate-only)."""
    if ratios.new_record is not None:
        write_calibration(call.out, ratios.new_record)
    if call.calibrate_only:
        call.say(f"[suite] step times in {call.out / CALIBRATION_FILE}; run the suite without --calibrate-only "
                 "to train")
        return
    record_suite(plan, call.out, call.data, runs, ratios.reused, sweep)


def size_later_runs(plan: SuitePlan, call: SuiteCall, sweep: Sweep, planned: list[PlannedRun],
                    fresh: dict[str, Any]) -> list[RunJob]:
    """Once a calibration alongside the runs is in: write it, plan the runs its ratios size (added to
    `planned`) and return their jobs for the queue. `sweep` is the phase's, as its other runs were
    planned with it (a rate bracketing adds meanwhile is the next phase's)."""
    ratios, record = merge_calibration(plan, call.data, None, fresh, call.say)
    _, later_jobs = decide(plan, call, ratios, sweep, skip={r.name for r in planned})
    planned[:] = plan_runs(plan, ratios, sweep.chosen, sweep.rates)
    write_calibration(call.out, record)
    record_suite(plan, call.out, call.data, planned, None, sweep)
    return later_jobs
