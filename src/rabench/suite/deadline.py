"""`rabench suite --deadline`: start only the runs that can finish in the time left, stop the rest at it.

A machine held for a fixed time (a SLURM allocation, a leased GPU node) loses whatever is in
flight when it goes away: a checkpoint on its disk cannot follow the next job to another machine.
With a deadline the suite starts a run only when its estimated duration fits in the time left,
and at the deadline stops the runs still going (each checkpoints), so a batch sized to the
lease ends with whole runs, and the same command continues the rest anywhere.

The estimate of a run's duration (wall-clock, from its start):

    remaining iterations x calibrated ms/iter x (1 + EVAL_SHARE) + overhead

The calibrated step time comes from the suite's calibration (iso design); a time-budget run
uses its budget instead. `overhead` (start-up, compilation, evaluations beyond EVAL_SHARE)
starts at a guess (FIRST_OVERHEAD_S) and, once a run has finished, is the largest overhead seen
in the suite's finished runs, those of earlier calls included (runs compiling side by side spend
tens of seconds beyond training, RA's more than sdpa's: results/campaign/README.md gives this
repository's figures). It decides only whether to start a run; the deadline itself is exact.

A run without an estimate (one to a plateau: its cap says nothing of its length; or a config with
no calibrated step time) starts only while at least twice its start-up estimate (the overhead
above) is left: it then trains at least as long as it spent starting, rather than being stopped
before its first checkpoint with its compilation thrown away. A run stopped before its trainer
wrote a checkpoint is reported as such: its work is lost and the next call starts it over.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rabench.errors import DeadlineReached
from rabench.rundir import RunFolder

EVAL_SHARE = 0.15  # evaluation time as a share of training time (2M tokens every 500 steps: ~0.1)
FIRST_OVERHEAD_S = {True: 90.0, False: 5.0}  # before any run finished: compiled / eager start-up


@dataclass
class Deadline:
    """The wall-clock time at which runs must be stopped, and the estimates that decide what starts."""

    at: float  # time.time() of the deadline
    ms_per_iter: dict[str, float] = field(default_factory=dict)  # calibrated step time per attention
    seen_overhead_s: dict[bool, float] = field(default_factory=dict)  # compiled flag -> largest overhead seen

    @classmethod
    def after(cls, seconds: float, ms_per_iter: dict[str, float] | None = None) -> Deadline:
        return cls(time.time() + seconds, dict(ms_per_iter or {}))

    def left_s(self) -> float:
        return self.at - time.time()

    def passed(self) -> bool:
        return self.left_s() <= 0

    def training_s(self, cfg) -> float | None:
        """Training time still to go for a run's TrainConfig, or None when it cannot be estimated (a run
        to a plateau stops when its curve flattens: its cap says nothing about its length)."""
        if cfg.until_plateau:
            return None
        if cfg.time_budget_s is not None:
            done = RunFolder(cfg.out).last_record().get("train_time_s", 0.0) if cfg.resume else 0.0
            return max(0.0, cfg.time_budget_s - float(done or 0.0))
        ms = self.ms_per_iter.get(cfg.attn)
        if ms is None or cfg.max_iters is None:
            return None
        done = int(RunFolder(cfg.out).last_record().get("iter", 0) or 0) if cfg.resume else 0
        return max(0, cfg.max_iters - done) * ms / 1000.0

    def overhead_s(self, cfg) -> float:
        """A run's time beyond training and evaluation (start-up, compilation): the largest seen, else the guess."""
        compiled = bool(cfg.compile)
        return self.seen_overhead_s.get(compiled, FIRST_OVERHEAD_S[compiled])

    def estimate_s(self, cfg) -> float | None:
        train = self.training_s(cfg)
        if train is None:
            return None
        return train * (1 + EVAL_SHARE) + self.overhead_s(cfg)

    def start_floor_s(self, cfg) -> float:
        """The least time left in which a run without an estimate is started: twice its start-up, so that
        it trains at least as long as it spends starting (compiling) before the deadline stops it."""
        return 2 * self.overhead_s(cfg)

    def fits(self, cfg) -> bool:
        """Can this run finish before the deadline? One whose length cannot be estimated (a run to a
        plateau) is started only while at least start_floor_s is left."""
        if self.passed():
            return False
        est = self.estimate_s(cfg)
        return self.left_s() >= self.start_floor_s(cfg) if est is None else est <= self.left_s()

    def why_not_started(self, cfg) -> str:
        """Why fits(cfg) said no, for the line that skips the run."""
        if self.estimate_s(cfg) is None:
            return (f"its length has no estimate (a run to a plateau, or no calibrated step time) and it starts only "
                    f"with at least {self.start_floor_s(cfg):.0f} s left (twice its start-up); "
                    f"{max(0.0, self.left_s()):.0f} s are left")
        return "it would not finish before the deadline"

    def use_calibration(self, calibration: dict) -> None:
        """Step times from a calibration record (calibration.json's content)."""
        self.ms_per_iter = {a: float(c["ms_per_iter"]) for a, c in calibration.get("configs", {}).items()
                            if isinstance(c, dict) and c.get("ms_per_iter") is not None}

    def learn_from_folder(self, cfg) -> None:
        """Learn from a run an earlier call finished (its summary's wall and training times): a
        fresh suite process then starts from the start-up times of this machine, not the guess."""
        folder = RunFolder(cfg.out)
        if folder.state() == "finished":
            summary = folder.summary() or {}
            self.learn(cfg, summary.get("wall_time_s"), summary.get("train_time_s"))

    def learn(self, cfg, elapsed_s: float | None, trained_s: float | None) -> None:
        """After a run finished in elapsed_s: keep the largest overhead beyond its training time seen."""
        if trained_s is None or elapsed_s is None:
            return
        key, overhead = bool(cfg.compile), max(0.0, elapsed_s - trained_s * (1 + EVAL_SHARE))
        self.seen_overhead_s[key] = max(self.seen_overhead_s.get(key, 0.0), overhead)


def deadline_message(not_started: list[str], stopped: list[str], unestimated: Sequence[str] = (),
                     lost: Sequence[str] = ()) -> DeadlineReached:
    """The one line for a deadline that left runs undone. `unestimated`: those of `not_started` with
    no time estimate (not started for too little time left, not for their length); `lost`: those of
    `stopped` that had no checkpoint when they stopped (the next call starts them over)."""
    groups = [  # (names, what to say of them), in the order the line gives them
        ([n for n in not_started if n not in unestimated],
         "run(s) not started (they would not finish in the time left: {})"),
        ([n for n in not_started if n in unestimated],
         "run(s) of unknown length (to a plateau, or no calibrated step time) not started (too little time left to "
         "start one: {})"),
        ([n for n in stopped if n not in lost], "stopped with a checkpoint ({})"),
        ([n for n in stopped if n in lost], "stopped without a checkpoint, their work lost: they start over ({})"),
    ]
    parts = [f"{len(names)} {text.format(', '.join(names))}" for names, text in groups if names]
    return DeadlineReached(f"deadline reached: {'; '.join(parts)}; run the same command to continue them")


def stop_message(deadline: Deadline | None, not_started: list[Any], stopped: list[Any],
                 more_not_started: Sequence[str] = ()) -> DeadlineReached:
    """deadline_message for jobs (suite.jobs.RunJob): which had no estimate, which had no checkpoint
    on disk when they stopped (a stop during start-up, before the trainer wrote one)."""
    unestimated = [job.run.name for job in not_started if deadline is not None and deadline.estimate_s(job.cfg) is None]
    lost = [job.run.name for job in stopped if not RunFolder(job.cfg.out).has_checkpoint()]
    return deadline_message([job.run.name for job in not_started] + list(more_not_started),
                            [job.run.name for job in stopped], unestimated, lost)
