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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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

    def estimate_s(self, cfg) -> float | None:
        train = self.training_s(cfg)
        if train is None:
            return None
        compiled = bool(cfg.compile)
        return train * (1 + EVAL_SHARE) + self.seen_overhead_s.get(compiled, FIRST_OVERHEAD_S[compiled])

    def fits(self, cfg) -> bool:
        """Can this run finish before the deadline? (One whose length cannot be estimated is started
        while time is left.)"""
        if self.passed():
            return False
        est = self.estimate_s(cfg)
        return est is None or est <= self.left_s()

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


def deadline_message(not_started: list[str], stopped: list[str]) -> DeadlineReached:
    parts = []
    if not_started:
        parts.append(f"{len(not_started)} run(s) not started (they would not finish in the time left: "
                     f"{', '.join(not_started)})")
    if stopped:
        parts.append(f"{len(stopped)} stopped with a checkpoint ({', '.join(stopped)})")
    return DeadlineReached(f"deadline reached: {'; '.join(parts)}; run the same command to continue them")
