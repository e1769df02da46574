"""The suite's last phase: train the jobs, one after another in this process or one per device in
worker processes (parallel.py), within the deadline when there is one (deadline.py).

The deadline is consulted here, by whichever runs the jobs: it learns the calibrated step times
and the start-up times of runs already finished, a run starts only if it can finish in time, and
at the deadline the runs still going checkpoint and stop.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rabench.errors import RunInterrupted
from rabench.suite.deadline import Deadline, stop_message
from rabench.suite.folder import read_calibration
from rabench.suite.jobs import RunJob, describe
from rabench.suite.parallel import SlotTask, run_parallel, sigterm_as_interrupt
from rabench.suite.plan import SuiteCall


def run_jobs(jobs: list[RunJob], call: SuiteCall, calibration: dict[str, Any] | None = None,
             first: SlotTask | None = None) -> None:
    """Train the jobs: one worker per device (`first`, the calibration, holding the first one), else
    here. `calibration`: a record just measured (else calibration.json's) for the deadline's
    estimates; runs finished by an earlier call tell it how long start-up takes here."""
    deadline = call.deadline
    if deadline is not None:
        deadline.use_calibration(calibration or read_calibration(call.out) or {})
        for job in jobs:
            deadline.learn_from_folder(job.cfg)
        if first is not None:
            first = learning_step_times(first, deadline, call.out)
    if call.devices:
        run_parallel(jobs, call.devices, call.say, deadline=deadline, first=first)
    else:
        run_sequential(jobs, call.say, deadline)


def learning_step_times(first: SlotTask, deadline: Deadline, out: Path) -> SlotTask:
    """`first` (a calibration beside the runs), telling the deadline the step times it wrote once it is in."""

    def done(returncode: int) -> list:
        jobs = first.done(returncode)
        deadline.use_calibration(read_calibration(out) or {})
        return jobs

    return replace(first, done=done)


def run_sequential(jobs: list[RunJob], say=print, deadline: Deadline | None = None) -> None:
    """Train the runs one after another in this process (and, under torchrun, in every rank).

    With a deadline, a run starts only if it can finish in time, and at the deadline this process
    sends itself SIGTERM: the run in training checkpoints and stops (see deadline.py)."""
    from rabench.training.trainer import train

    todo = [job for job in jobs if job.action != "skip"]
    for job in jobs:
        if job.action == "skip":
            say(f"[suite] {job.run.name}: done, skipped")
    not_started: list[RunJob] = []
    if deadline is not None and deadline.passed():  # a calibration used it up: a timer at 0 s would interrupt anywhere
        raise stop_message(deadline, todo, [])
    with stop_at(deadline):
        for i, job in enumerate(todo):
            name = job.run.name
            job.cfg.resume = job.action == "resume"
            if deadline is not None and not deadline.fits(job.cfg):
                say(f"[suite] {name}: not started, {deadline.why_not_started(job.cfg)}")
                not_started.append(job)
                continue
            say(f"[suite] {name}: {'resuming' if job.cfg.resume else 'starting'} ({describe(job.run)})")
            started, expected = time.time(), deadline.training_s(job.cfg) if deadline is not None else None
            try:
                summary = train(job.cfg)
            except (RunInterrupted, KeyboardInterrupt):
                if deadline is None or not deadline.passed():
                    raise
                # one stopped before its trainer wrote a checkpoint (still starting up) is reported as work lost
                raise stop_message(deadline, not_started + todo[i + 1:], [job]) from None
            if deadline is not None:
                deadline.learn(job.cfg, time.time() - started, expected)
            say(f"[suite] {name}: {summary['iters']} iters, val {fmt(summary.get('final_val_loss'))}, "
                f"{summary.get('ms_per_iter')} ms/iter")
    if not_started:
        raise stop_message(deadline, not_started, [])


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


def fmt(value: float | None) -> str:
    """A loss for the suite's lines: four decimals, or '-' when there is none."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"
