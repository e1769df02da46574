"""The suite's step-time ratios: each config's step time over the baseline's on this card, from
calibration.json when it holds them for this machine, card, code and settings, else measured
(calibrate.py) and merged in.

Measured once and reused on the machine, card and code that measured it (`--reuse-calibration`:
on others too, recorded in suite.json). Attentions added to a calibrated suite are measured with
the baseline in a new interleaved session and merged in; the entries already there (and so every
run's iteration count) stay. With several devices and nothing stored, the calibration runs as a
worker on the first device while the runs that need no ratio train on the others (calibration_task).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rabench import attention
from rabench.errors import RabenchError
from rabench.experiment import BASELINE
from rabench.fileio import json_form
from rabench.stats import wide_ratio_line
from rabench.suite import calibrate  # the module: calibrate.calibrate measures (tests replace it)
from rabench.suite.folder import CALIBRATION_FILE, CALIBRATION_LOG, MEASURING_FILE, read_calibration
from rabench.suite.jobs import RunJob, iso_time_runs_to_size
from rabench.suite.parallel import SlotTask, spawn
from rabench.suite.plan import SuiteCall, SuitePlan
from rabench.training import distributed as dd
from rabench.training.config import TrainConfig


@dataclass
class StepRatios:
    """What the ratios phase found: each config's step-time ratio to the baseline (None: the design
    needs none, or a worker measures them beside the runs: `alongside`, the attentions it measures),
    calibration.json's new content (None: unchanged) and a --reuse-calibration to record."""

    ratios: dict[str, float] | None = None
    new_record: dict[str, Any] | None = None
    reused: dict[str, Any] | None = None
    alongside: list[str] | None = None


def needs_step_ratios(plan: SuitePlan) -> bool:
    """Does a run's length depend on a step ratio? Only the iso design's iso-time runs do. Runs to a
    plateau stop on their own curve (a ratio would only label them, and the deadline estimates no
    plateau run), so a plateau suite spends no compile and no timed steps on a calibration."""
    return plan.design == "iso" and not plan.until_plateau


def step_ratios(plan: SuitePlan, call: SuiteCall, device) -> StepRatios:
    """The iso design's step ratios: stored, measured here, or left to a worker beside the runs."""
    if plan.until_plateau and call.calibrate_only:
        raise RabenchError("--calibrate-only with --until-plateau: runs to a plateau need no step-time calibration "
                           "(no run is sized by a ratio); drop one of them")
    if calibrates_alongside(plan, call.out, call.devices, call.recalibrate, call.calibrate_only):
        alongside = [BASELINE] + [a for a in plan.attns if a != BASELINE]  # everything, measured afresh
        announce_calibration(plan, alongside, device, call.say)
        return StepRatios(alongside=alongside)
    if not needs_step_ratios(plan):
        if call.calibrate_only:
            raise RabenchError("--calibrate-only belongs to the iso design (the time design needs no calibration)")
        return StepRatios()
    # under torchrun rank 0 alone measures (on its GPU) and every rank plans from its numbers
    info = dd.init_distributed(device.type)
    ratios, record = dd.broadcast_object(
        dd.on_main(lambda: calibrated_ratios(plan, call.out, call.data, device, call.recalibrate, call.say,
                                             call.reuse_calibration), info), info)
    reused = calibration_reuse_entry(plan, call.out, device) if call.reuse_calibration and not call.recalibrate else None
    return StepRatios(ratios, record, reused)


def calibration_request(plan: SuitePlan, attns: list[str], data: str) -> calibrate.CalibrationRequest:
    """What the calibration times: the plan's first seed and every setting that changes a step's cost."""
    base = TrainConfig(attn=BASELINE, data=data, out="", preset=plan.preset, seed=plan.seeds[0],
                       max_iters=plan.max_iters, **plan.train).resolved()
    options = {a: attention.resolve_options(a, plan.options.get(a)) for a in attns}
    return calibrate.CalibrationRequest(
        attns=attns, options=options, preset=plan.preset, batch_size=base.batch_size, seq_len=base.seq_len,
        grad_accum=base.grad_accum, lr=base.lr, weight_decay=base.weight_decay, betas=(base.beta1, base.beta2),
        grad_clip=base.grad_clip, compile=base.compile, compile_mode=base.compile_mode, data=data, seed=plan.seeds[0],
        steps=plan.calib_steps, windows=plan.calib_windows, gate_lr_mult=base.gate_lr_mult)


def calibrated_ratios(plan: SuitePlan, out: Path, data: str, device, recalibrate: bool,
                      say=print, reuse: bool = False) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Step-time ratio to the baseline per attention, and calibration.json's new content if it changes
    (written by the caller only once the runs on disk agree with the new numbers).

    Measured once and reused on the machine, card and code that measured it (`reuse`: on others
    too). Attentions added to a calibrated suite are measured with the baseline in a new
    interleaved session and merged in; the entries already there (and so every run's iteration
    count) stay.
    """
    stored, attns = stored_calibration(plan, out, data, device, recalibrate, say, reuse)
    fresh = None
    if attns:
        announce_calibration(plan, attns, device, say)
        fresh = calibrate.calibrate(calibration_request(plan, attns, data), device, BASELINE)
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
        check_calibration_origin(*foreign_sizing(plan, out, stored, device), out, reuse, say)
    missing = [a for a in plan.attns if stored is None or a not in stored.get("configs", {})]
    return stored, ([BASELINE] + [a for a in missing if a != BASELINE] if missing else [])


def calibration_origin_differences(stored: dict[str, Any], device) -> list[str]:
    """'field: stored -> here' for each of machine, card and code in which a stored calibration
    differs from this process's; a field the calibration lacks (older suites) counts as differing,
    since nothing shows that it matches."""
    here = calibrate.calibration_origin(device)
    return [f"{k}: {stored.get(k, 'not recorded')} -> {v}" for k, v in here.items() if stored.get(k) != v]


def stored_ratios(stored: dict[str, Any]) -> dict[str, float]:
    """calibration.json's step-time ratio per config."""
    return {a: float(c["ratio"]) for a, c in stored.get("configs", {}).items()}


def foreign_sizing(plan: SuitePlan, out: Path, stored: dict[str, Any], device) -> tuple[list[str], list[str]]:
    """How a stored calibration's origin differs from here (calibration_origin_differences) and, only
    where it does, the iso-time runs its ratios would size now: the one reading of "a ratio measured
    elsewhere sizes a run", for the refusal and for suite.json's record of a reuse."""
    differences = calibration_origin_differences(stored, device)
    return differences, (iso_time_runs_to_size(plan, out, stored_ratios(stored)) if differences else [])


def check_calibration_origin(differences: list[str], to_size: list[str], out: Path, reuse: bool,
                             say=print) -> None:
    """Step-time ratios hold for the machine, card and code that measured them: refuse them
    elsewhere unless the user asked to reuse them (suite.json then records it). `differences` and
    `to_size` as foreign_sizing gives them; with no run to size (every one kept), the ratios size
    nothing and go unused."""
    if not differences:
        return
    what = "; ".join(differences)
    if not to_size:
        say(f"[suite] {CALIBRATION_FILE} was measured on another machine, card or code ({what}); not used to size "
            "anything: every iso-time run it would size is already in its folder and keeps its stored length")
        return
    if not reuse:
        more = f" and {len(to_size) - 1} more" if len(to_size) > 1 else ""
        raise RabenchError(f"{out / CALIBRATION_FILE} was measured on another machine, card or code ({what}) and "
                           f"would size iso-time runs not yet started ({to_size[0]}{more}): pass "
                           "--recalibrate to measure here (runs trained with other iteration counts are then refused) "
                           "or --reuse-calibration to keep its ratios (suite.json records it)")
    say(f"[suite] --reuse-calibration: keeping the ratios of {CALIBRATION_FILE} measured elsewhere ({what})")


def announce_calibration(plan: SuitePlan, attns: list[str], device, say=print) -> None:
    say(f"[suite] calibrating step time on {calibrate.card_name(device)}: {', '.join(attns)} "
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
        if (wide := wide_ratio_line(a, c["ratio"], *c["ratio_ci95"])) is not None:
            say(f"[suite]   caution: {wide}")
    return {a: float(stored["configs"][a]["ratio"]) for a in plan.attns}, stored


def calibration_reuse_entry(plan: SuitePlan, out: Path, device) -> dict[str, Any] | None:
    """suite.json's note of a --reuse-calibration call on another machine, card or code (None: same
    origin, or no iso-time run left for its ratios to size: nothing was reused)."""
    stored = read_calibration(out)
    differences, to_size = foreign_sizing(plan, out, stored, device) if stored else ([], [])
    if not to_size:
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
    return (needs_step_ratios(plan) and bool(devices) and len(devices) > 1 and not calibrate_only
            and any(a != BASELINE for a in plan.attns) and (recalibrate or read_calibration(out) is None))


def calibration_task(plan: SuitePlan, out: Path, data: str, attns: list[str], n_workers: int,
                     sized_jobs: Callable[[dict[str, Any]], list[RunJob]]) -> SlotTask:
    """The calibration as a worker process (rabench.suite.worker calibrate) for run_parallel's first slot."""
    request = json.dumps(asdict(calibration_request(plan, attns, data)))
    result = out / MEASURING_FILE
    log = out / CALIBRATION_LOG

    def launch(device: str):
        result.unlink(missing_ok=True)
        return spawn(["rabench.suite.worker", "calibrate", request, BASELINE, str(result)], device, n_workers, log)

    def done(returncode: int) -> list[RunJob]:
        if returncode != 0 or not result.is_file():
            raise RabenchError(f"the step-time calibration failed (exit {returncode}); its output is in {log}")
        fresh = json.loads(result.read_text())
        result.unlink()
        return sized_jobs(fresh)

    return SlotTask("calibration", launch, done)
