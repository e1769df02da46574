"""The suite's jobs: every run the plan asks for (its folder, role and length) and what to do with
each folder (start, resume, or skip a finished run), refusing a folder trained under other settings.

Runs go seed by seed, so the first seeds complete first. With a learning-rate sweep the selection
runs come first; once they have all finished, each config's rate is chosen by SWEEP_RULE and the
verdict runs are planned at it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from rabench.errors import RabenchError
from rabench.experiment import BASELINE
from rabench.machine import machine_id
from rabench.rundir import RunFolder
from rabench.suite.folder import (BASE_ROLE, ISO_ITER, ISO_TIME, LADDER, LR_SWEEP, PLATEAU, TIME, pairs_across_machines,
                                  read_calibration, read_suite_record, run_name, verdict_elsewhere_at,
                                  write_suite_record)
from rabench.suite.plan import SuiteCall, SuitePlan, gets_run
from rabench.training import distributed as dd
from rabench.training.config import TrainConfig, curve_changing_differences

@dataclass(frozen=True)
class PlannedRun:
    """One training run of the suite: its folder name, attention, seed, budget and role."""

    name: str
    attn: str
    seed: int
    role: str  # one of folder.py's roles: baseline, iso-iter, iso-time, ladder, lr-sweep, time, plateau
    max_iters: int | None
    time_budget_s: float | None
    step_ratio: float | None
    ladder_ratio: float | None = None  # a ladder run's r: max_iters = round(N / r)
    lr: float | None = None  # with an lr sweep: the rate this run trains at (else the plan's [train] lr)


SWEEP_RULE = ("each config's learning rate is the one with the best (lowest) mean final val_loss at N over the "
              "selection seeds; ties go to the lower rate; a run whose final val_loss is not finite counts as worst")
BRACKET_RULE = ("where a config's best rate is the smallest (largest) it has tried, it also trains at half (double) "
                "that rate on the selection seeds, up to {n} added rates per config; its rate is chosen once its best "
                "lies inside the rates tried or the added rates are used up")


def bracket_rule(plan: SuitePlan) -> str | None:
    """BRACKET_RULE as this plan sets it (None: no bracketing)."""
    return BRACKET_RULE.format(n=plan.lr_bracket) if plan.lr and plan.lr_bracket else None


class Sweep(NamedTuple):
    """An lr sweep's state in a suite folder (sweep_state), read once per phase of a suite call."""

    rates: dict[str, list[float]]  # each config's selection rates so far: the grid and what bracketing added
    chosen: dict[str, float] | None  # each config's rate by SWEEP_RULE; None until every selection is complete


def sweep_state(plan: SuitePlan, out: Path | None) -> Sweep:
    """Each config's selection rates (the plan's grid, plus the rates bracketing has added on the
    results in `out` so far) and the chosen rates (None until every config's selection is complete).

    Bracketing adds a rate only once every selection run of that config has finished, so a rate is
    added on the same evidence however the runs were split across calls or machines."""
    rates = {attn: sorted(plan.lr) for attn in plan.attns}
    if not plan.lr:
        return Sweep(rates, None)
    chosen: dict[str, float] = {}
    for attn in plan.attns:
        for added in range(plan.lr_bracket + 1):
            means = selection_means(plan, out, attn, rates[attn]) if out is not None else None
            if means is None:
                break
            best = min(rates[attn], key=lambda lr: (means[lr], lr))
            low, high = rates[attn][0], rates[attn][-1]
            if added == plan.lr_bracket or low < best < high:
                chosen[attn] = best
                break
            rates[attn] = [best / 2] + rates[attn] if best == low else rates[attn] + [best * 2]
    return Sweep(rates, chosen if len(chosen) == len(plan.attns) else None)


def selection_means(plan: SuitePlan, out: Path, attn: str, rates: list[float]) -> dict[float, float] | None:
    """Mean final val_loss over the selection seeds per rate (not finite: worst), or None while a run is unfinished."""
    means = {}
    for lr in rates:
        finals = []
        for seed in plan.selection_seeds:
            folder = RunFolder(out / run_name(attn, seed, LR_SWEEP, lr=lr))
            if folder.state() != "finished":
                return None
            final = (folder.summary() or {}).get("final_val_loss")
            finals.append(final if isinstance(final, (int, float)) and math.isfinite(final) else math.inf)
        means[lr] = sum(finals) / len(finals)
    return means


def iso_time_iters(n: int, ratio: float) -> int:
    """round(N / s), at least one iteration."""
    return max(1, round(n / ratio))


def plan_runs(plan: SuitePlan, ratios: dict[str, float] | None, chosen: dict[str, float] | None = None,
              rates: dict[str, list[float]] | None = None) -> list[PlannedRun]:
    """Every run of the suite, seed by seed (so the first seeds complete first). In the iso design
    without ratios (a calibration still measuring): only the runs whose length needs none. With a
    learning-rate sweep: its selection runs at each config's `rates` (default: the plan's grid), then
    the verdict runs at each config's `chosen` rate once the selection has chosen (None: not yet)."""
    if not plan.lr:
        return verdict_runs(plan, ratios)
    rates = rates if rates is not None else {attn: list(plan.lr) for attn in plan.attns}
    selection = [PlannedRun(run_name(attn, seed, LR_SWEEP, lr=lr), attn, seed, LR_SWEEP, plan.max_iters, None,
                            (ratios or {}).get(attn), lr=lr)
                 for seed in plan.selection_seeds for attn in plan.attns for lr in rates[attn]]
    if chosen is None or verdict_elsewhere(plan, chosen):
        return selection
    return selection + [replace(r, lr=chosen[r.attn]) for r in verdict_runs(plan, ratios)]


def verdict_elsewhere(plan: SuitePlan, chosen: dict[str, float]) -> bool:
    """Did every config choose the plan's `verdict_exists_at`? Its verdict is then the one run
    elsewhere at that rate, and this suite plans none (one config at another rate runs them all:
    a verdict pairs each config with the baseline on one machine)."""
    return plan.verdict_exists_at is not None and verdict_elsewhere_at(chosen, plan.verdict_exists_at)


def verdict_runs(plan: SuitePlan, ratios: dict[str, float] | None) -> list[PlannedRun]:
    """The design's runs on the verdict seeds (every run of a suite without an lr sweep)."""
    runs = []
    for seed in plan.seeds:
        for attn in plan.attns:
            ratio = (ratios or {}).get(attn)
            if plan.until_plateau:
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, PLATEAU, plan.max_iters, plan.time_budget_s, ratio))
            elif plan.design == "time":
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, TIME, plan.max_iters, plan.time_budget_s, ratio))
            elif attn == BASELINE:
                runs.append(PlannedRun(run_name(attn, seed), attn, seed, BASE_ROLE, plan.max_iters, None, 1.0))
            else:
                assert plan.max_iters is not None
                if gets_run(plan.isoiter_attns, attn):
                    runs.append(PlannedRun(run_name(attn, seed), attn, seed, ISO_ITER, plan.max_iters, None, ratio))
                if ratios is not None and gets_run(plan.isotime_attns, attn):
                    runs.append(PlannedRun(run_name(attn, seed, ISO_TIME), attn, seed, ISO_TIME,
                                           iso_time_iters(plan.max_iters, ratio), None, ratio))
                if gets_run(plan.isotime_attns, attn):
                    runs += ladder_runs(plan, attn, seed, ratio)
    return runs


def ladder_runs(plan: SuitePlan, attn: str, seed: int, ratio: float | None) -> list[PlannedRun]:
    """The candidate's length ladder for one seed: round(N / r) iterations per r, no calibration needed."""
    assert plan.max_iters is not None
    return [PlannedRun(run_name(attn, seed, LADDER, r), attn, seed, LADDER, iso_time_iters(plan.max_iters, r),
                       None, ratio, r) for r in plan.ladder]


def train_config(plan: SuitePlan, run: PlannedRun, out: Path, data: str, suite_name: str,
                 progress_bar: bool) -> TrainConfig:
    """The TrainConfig of one planned run (labels say its role; they never change the curve)."""
    labels = {"role": run.role, "step_ratio": run.step_ratio, "baseline": BASELINE, "suite": suite_name}
    if run.ladder_ratio is not None:
        labels["ladder_ratio"] = run.ladder_ratio
    if run.role == LR_SWEEP:
        labels["lr_stage"] = "selection"
    settings = plan.train | ({"lr": run.lr} if run.lr is not None else {})  # a sweep's [train] has no lr
    return TrainConfig(attn=run.attn, data=data, out=str(out / run.name), preset=plan.preset, seed=run.seed,
                       attn_options=dict(plan.options.get(run.attn, {})), time_budget_s=run.time_budget_s,
                       max_iters=run.max_iters, until_plateau=plan.until_plateau, progress_bar=progress_bar,
                       labels=labels, **settings)


def kept(folder: RunFolder) -> bool:
    """Finished, or a checkpoint to continue from: the folder keeps its run (and its stored length)."""
    return folder.state() == "finished" or folder.has_checkpoint()


def iso_time_runs_to_size(plan: SuitePlan, out: Path, ratios: dict[str, float]) -> list[str]:
    """The iso-time runs that `ratios` (config -> s) would size now: those not yet in a kept folder.
    A kept iso-time run trains on to its stored max_iters, so a ratio sizes only runs still to start.
    The runs are the ones plan_runs plans in this folder's state: an lr sweep plans its verdict
    only once the selection has chosen, so a sweep still selecting sizes nothing (its selection
    runs resume on any machine without a calibration from elsewhere being refused)."""
    known = {a: ratios.get(a, 1.0) for a in plan.attns}
    sweep = sweep_state(plan, out)
    return [r.name for r in plan_runs(plan, known, sweep.chosen, sweep.rates)
            if r.role == ISO_TIME and r.attn in ratios and not kept(RunFolder(out / r.name))]


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
        if not kept(folder):  # nothing worth keeping: started from scratch
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


def split_machine_notices(jobs: list[RunJob], out: Path, here: str | None = None) -> list[str]:
    """One line per seed whose runs would end up on more than one machine: the folder's runs record
    the machine that started them (config.json machine_id; a resumed run keeps its first) and the
    runs started now get this one. The report pairs runs of one machine only (analysis.pairing),
    so such a seed's cross-machine pairs will not form; saying so before the runs lets a user with
    another lease run that seed's runs together instead. Runs to a plateau pair across machines
    (they outlive a lease), so they raise no notice."""
    here = here or machine_id()
    groups: dict[tuple[int, float | None], dict[str, list[str]]] = {}
    for job in jobs:
        if pairs_across_machines(job.run.role):
            continue
        stored = (RunFolder(out / job.run.name).config() or {}).get("machine_id") if job.action != "start" else here
        if stored:  # runs from before machine_id pair with any machine
            groups.setdefault((job.run.seed, job.run.lr), {}).setdefault(str(stored), []).append(job.run.name)
    notices = []
    for (seed, _), machines in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or 0.0)):
        if len(machines) > 1:
            where = "; ".join(f"{', '.join(names)} on {'this machine, ' if m == here else ''}{m}"
                              for m, names in sorted(machines.items()))
            notices.append(f"[suite] seed {seed}: runs on {len(machines)} machines ({where}); the report pairs "
                           "runs of one machine only, so this seed's pairs across them will not form")
    return notices


def decide(plan: SuitePlan, call: SuiteCall, ratios: dict[str, float] | None,
           sweep: Sweep, skip: Collection[str] = ()) -> tuple[list[PlannedRun], list[RunJob]]:
    """The jobs phase: every planned run (but those named in `skip`) and what its folder needs.
    In the iso design without ratios: the runs whose length needs none."""
    runs = [r for r in plan_runs(plan, ratios, sweep.chosen, sweep.rates) if r.name not in skip]
    return runs, decide_jobs(runs, [run_config(plan, call, r) for r in runs], call.out)


def run_config(plan: SuitePlan, call: SuiteCall, run: PlannedRun, progress_bar: bool | None = None) -> TrainConfig:
    """One run's TrainConfig in this call (a progress bar only for runs trained here, one at a time)."""
    bar = call.progress_bar and not call.devices if progress_bar is None else progress_bar
    return train_config(plan, run, call.out, call.data, suite_name(call), bar)


def suite_name(call: SuiteCall) -> str:
    """The suite folder's name, each run's labels.suite."""
    return call.out.resolve().name


def check_runs_before_calibration(plan: SuitePlan, call: SuiteCall, sweep: Sweep) -> None:
    """decide_jobs over every run whose budget is known without a new calibration."""
    stored = None if call.recalibrate else read_calibration(call.out)
    known = {a: float(c["ratio"]) for a, c in (stored or {}).get("configs", {}).items()}
    runs = [r for r in plan_runs(plan, {a: known.get(a, 1.0) for a in plan.attns}, sweep.chosen, sweep.rates)
            if r.role != ISO_TIME or r.attn in known]
    decide_jobs(runs, [run_config(plan, call, r, progress_bar=False) for r in runs], call.out)


def record_suite(plan: SuitePlan, out: Path, data: str, runs: list[PlannedRun],
                 reused: dict[str, Any] | None = None, sweep: Sweep | None = None) -> None:
    """suite.json; `reused`: this call kept a calibration from another machine, card or code, added to
    the calls before it that did ("calibration_reuse": what the report names); `sweep`: an lr sweep's
    state as this call read it (sweep_state; None: read here), its rule written before any run. A plan
    changed after runs had finished is added to "plan_changes" (plan_change)."""
    stored = read_suite_record(out)
    earlier = stored.get("calibration_reuse") or []
    if reused and any(e.get("calibration_measured_at") == reused["calibration_measured_at"]
                      and e.get("differences") == reused["differences"] for e in earlier):
        reused = None  # the same calibration kept across the same differences: noted once
    sweep_fields = {"lr_sweep": sweep_record(plan, sweep or sweep_state(plan, out))} if plan.lr else {}
    change = plan_change(stored, plan, out)
    changes = (stored.get("plan_changes") or []) + ([change] if change else [])
    record = plan.to_dict() | {"data": data, "baseline": BASELINE, "plan_changes": changes,
                               "runs": [{"name": r.name, "attn": r.attn, "seed": r.seed, "role": r.role,
                                         "max_iters": r.max_iters, "time_budget_s": r.time_budget_s,
                                         "step_ratio": r.step_ratio}
                                        | ({"ladder_ratio": r.ladder_ratio} if r.ladder_ratio is not None else {})
                                        | ({"lr": r.lr} if r.lr is not None else {})
                                        for r in runs],
                               "calibration_reuse": earlier + ([reused] if reused else [])} | sweep_fields
    write_suite_record(out, record)


# set per call (the machine's device type, the --data path; a run trained on other data is refused anyway)
UNCHANGING = ("train.device", "data")


def plan_change(earlier: dict[str, Any], plan: SuitePlan, out: Path) -> dict[str, Any] | None:
    """suite.json's entry for a plan changed after some of its runs had finished ({"at", "changed":
    {key: [old, new]}}), so the report can say which settings were fixed before which evidence;
    None when nothing changed, or no run had finished (a plan may be edited freely before its runs).
    A key an older suite.json lacks counts as its default; a [train] setting one side lacks, as unset."""
    if not earlier or not any(RunFolder(out / r["name"]).state() == "finished" for r in earlier.get("runs") or []
                              if isinstance(r, dict) and isinstance(r.get("name"), str)):
        return None
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                for f in fields(SuitePlan) if f.default is not MISSING or f.default_factory is not MISSING}
    before, after, changed = flat_plan(earlier), flat_plan(plan.to_dict()), {}
    for key in sorted(before.keys() | after.keys()):  # a [train] setting may be added or dropped
        old, new = before.get(key, defaults.get(key)), after.get(key, defaults.get(key))
        if key not in UNCHANGING and old != new:
            changed[key] = [old, new]
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "changed": changed} if changed else None


def flat_plan(record: dict[str, Any]) -> dict[str, Any]:
    """A plan's fields with [train]'s spelled `train.<key>` (one entry per setting)."""
    plan_keys = {f.name for f in fields(SuitePlan)}
    flat = {k: v for k, v in record.items() if k in plan_keys and k != "train"}
    flat |= {f"train.{k}": v for k, v in (record.get("train") or {}).items()}
    return flat


def sweep_record(plan: SuitePlan, sweep: Sweep) -> dict[str, Any]:
    """suite.json's "lr_sweep": the grid, seeds and rules as the plan fixed them, the rates tried so
    far and the chosen ones ({} until the selection completes)."""
    record = {"lrs": plan.lr, "selection_seeds": plan.selection_seeds, "rule": SWEEP_RULE,
              "chosen": sweep.chosen or {}, "rates_tried": sweep.rates}
    if (rule := bracket_rule(plan)) is not None:
        record["bracket_rule"] = rule
    if plan.verdict_exists_at is not None:
        record["verdict_exists_at"] = plan.verdict_exists_at
    return record


def describe(run: PlannedRun) -> str:
    """What the run is, for the line that starts it: role and length (and its rate in a sweep)."""
    budget = f"{run.max_iters} iters" if run.max_iters is not None else f"{run.time_budget_s:g} s"
    rate = f", lr {run.lr:g}" if run.lr is not None else ""
    if run.role == ISO_TIME:
        return f"{run.role}, {budget} = N / {run.step_ratio:.3f}{rate}"
    if run.role == LADDER:
        return f"{run.role}, {budget} = N / {run.ladder_ratio:g}{rate}"
    return f"{run.role}, {budget}{rate}"
