"""The report's section on the plan's full test: runs trained to a val_loss plateau, then cooled down.

Per run: where the plateau rule (rabench.training.plateau) fired, the train time it took to
get there, the final loss after the cooldown with its standard error, the best loss and where,
the train-val gap, and the epochs and repeated-token share at the plateau (rabench.data.regime),
since on a corpus read more than once a plateau can come from over-fitting as much as from
convergence. Per candidate: criterion 3 judged at the plateau (paired by seed), beside the
wall-clock to the plateau. notes/plateau-rule.md gives the rule and why the final loss is the
last evaluation rather than the best.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rabench.analysis.document import Doc
from rabench.analysis.runs import BASELINE, PLATEAU, Run
from rabench.data.regime import data_regime, epochs, repeated_token_share
from rabench.errors import RabenchError
from rabench.stats import PairedStats, decide, finite, paired_stats
from rabench.training.plateau import plateau_index

UNKNOWN_MACHINE = "unknown"
RULE_NOTE = "notes/plateau-rule.md"


@dataclass
class PlateauPoint:
    """One plateau run at its plateau and at its end."""

    run: Run
    plateau_iter: int | None  # the iteration whose evaluation fired the rule; None: it never fired
    recomputed: bool  # found by replaying the rule on the curve (the run's summary predates plateau_iter)
    plateau_time_s: float  # train_time_s at that evaluation
    final_loss: float
    final_se: float
    best_loss: float
    best_iter: float
    total_iters: int
    total_time_s: float
    gap_at_plateau: float  # val_loss - mean train_loss over the evaluation interval before it
    gap_at_end: float
    train_tokens: int | None  # the training split's size (None: not recorded and the data folder is gone)

    @property
    def reached(self) -> bool:
        """Stopped by the rule and its cooldown (not by a cap, a failure or an interruption)."""
        return self.run.ran_to_plateau

    @property
    def machine(self) -> str:
        return machine_of(self.run)

    def epochs_at(self, iteration: float) -> float:
        tokens_per_iter = self.run.config.get("tokens_per_iter")
        if self.train_tokens is None or not finite(tokens_per_iter) or not finite(iteration):
            return math.nan
        return epochs(iteration * tokens_per_iter, self.train_tokens)


def machine_of(run: Run) -> str:
    """config.json's machine_id (the machine that started the run); older runs lack it."""
    value = run.config.get("machine_id")
    return str(value) if value else UNKNOWN_MACHINE


def is_plateau_run(run: Run) -> bool:
    """Trained with --until-plateau (or labelled so by the suite)."""
    return bool(run.config.get("until_plateau")) or run.role == PLATEAU


def train_tokens_of(run: Run) -> int | None:
    """The training split's token count: config.json's data_regime, else the data folder's meta.json
    if it is still where the run read it."""
    regime = run.config.get("data_regime")
    if isinstance(regime, dict) and finite(regime.get("train_tokens")) and regime["train_tokens"] > 0:
        return int(regime["train_tokens"])
    data = run.config.get("data")
    if not data or not (Path(data) / "meta.json").is_file():
        return None
    from rabench.data.loader import load_meta

    try:
        tokens = data_regime(load_meta(data))["train_tokens"]
    except RabenchError:
        return None
    return tokens or None


def find_plateau_iter(run: Run) -> tuple[int | None, bool]:
    """(iteration, recomputed): the summary's plateau_iter, else the rule replayed on the eval curve
    with the run's own patience and min_delta (evaluations after the cooldown began are not read)."""
    summary = run.summary or {}
    if "plateau_iter" in summary:
        value = summary["plateau_iter"]
        return (int(value) if finite(value) else None), False
    cfg = run.config
    losses = [float(m["val_loss"]) for m in run.evals]
    at = plateau_index(losses, int(cfg.get("plateau_patience", 5)), float(cfg.get("plateau_min_delta", 0.01)))
    return (int(run.evals[at]["iter"]) if at is not None else None), True


def record_at(run: Run, iteration: float) -> dict:
    return next((m for m in run.metrics if m.get("iter") == iteration), {})


def train_val_gap(run: Run, iteration: float) -> float:
    """val_loss at an evaluation minus the mean logged train_loss over the evaluation interval before
    it (train_loss records are means over a few steps: one alone is noisy). Positive: val is worse."""
    val = record_at(run, iteration).get("val_loss")
    every = run.config.get("eval_every") or 1
    train = [float(m["train_loss"]) for m in run.metrics if finite(m.get("train_loss")) and finite(m.get("iter"))
             and iteration - every < m["iter"] <= iteration]
    if not finite(val) or not train:
        return math.nan
    return float(val) - statistics.fmean(train)


def plateau_point(run: Run) -> PlateauPoint:
    at, recomputed = find_plateau_iter(run)
    best = min(run.evals, key=lambda m: m["val_loss"]) if run.evals else {}
    plateau_time = record_at(run, at).get("train_time_s") if at is not None else None
    return PlateauPoint(
        run=run, plateau_iter=at, recomputed=recomputed,
        plateau_time_s=float(plateau_time) if finite(plateau_time) else math.nan,
        final_loss=run.final_val_loss, final_se=run.final_val_se,
        best_loss=float(best.get("val_loss", math.nan)), best_iter=float(best.get("iter", math.nan)),
        total_iters=run.iters, total_time_s=run.train_time_s,
        gap_at_plateau=train_val_gap(run, at) if at is not None else math.nan,
        gap_at_end=train_val_gap(run, run.final_iter),
        train_tokens=train_tokens_of(run))


# ---------------------------------------------------------------- comparisons


@dataclass
class PlateauPair:
    """A candidate's plateau run and the baseline's with the same seed in the same suite folder."""

    seed: int
    cand: PlateauPoint
    base: PlateauPoint

    @property
    def crosses_machines(self) -> bool:
        return self.cand.machine != self.base.machine or UNKNOWN_MACHINE in (self.cand.machine, self.base.machine)

    @property
    def crosses_cards(self) -> bool:
        """Started on different kinds of card: their step times, so their times to plateau, do not compare."""
        return len(self.cards) > 1

    @property
    def cards(self) -> set[str]:
        return {str(r.config.get("gpu_name") or r.config.get("device")) for r in (self.cand.run, self.base.run)}

    @property
    def loss_margin(self) -> float:
        """Baseline final loss - candidate final loss: positive when the candidate ends lower."""
        return self.base.final_loss - self.cand.final_loss

    @property
    def time_ratio(self) -> float:
        """Candidate train time to its plateau over the baseline's."""
        return self.cand.plateau_time_s / self.base.plateau_time_s if self.base.plateau_time_s > 0 else math.nan


def pair_points(points: list[PlateauPoint], candidate: str) -> tuple[list[PlateauPair], list[str]]:
    """Pairs by (suite folder, seed) of runs that both reached their plateau; notes for the rest.
    A pair may span device calls and machines: the seed fixes the initial weights and the data order
    wherever a run trains; pairing_notes names the pairs that cross machines. Not pairing.pair_runs: the
    verdict table pairs within one card and machine and any finished run, this test only runs that reached
    their plateau, across the device calls a run to a plateau may need."""
    base = {(p.run.batch, p.run.seed): p for p in points if p.run.attn == BASELINE and p.reached}
    pairs, notes = [], []
    for p in points:
        if p.run.attn != candidate:
            continue
        partner = base.get((p.run.batch, p.run.seed))
        if not p.reached:
            notes.append(f"{p.run.where}: {stop_text(p)}; not paired")
        elif partner is None:
            notes.append(f"{p.run.where}: no {BASELINE} run with seed {p.run.seed} that reached its plateau in the "
                         "same folder; not paired")
        else:
            pairs.append(PlateauPair(p.run.seed, p, partner))
    return sorted(pairs, key=lambda q: (q.cand.run.batch, q.seed)), notes


def pairing_notes(pairs: list[PlateauPair]) -> list[str]:
    """Say when a pair's two runs started on different machines (or one machine is not recorded): the
    losses still compare (same seed, same data order, same weights at the start), wall-clock only
    where both cards are of one kind."""
    out = []
    for q in pairs:
        if not q.crosses_machines:
            continue
        a, b = q.cand, q.base
        kind = ("one kind of card" if not q.crosses_cards
                else f"different cards ({', '.join(sorted(q.cards))}): their times do not compare")
        unknown = [p.run.name for p in (a, b) if p.machine == UNKNOWN_MACHINE]
        where = (f"machine not recorded for {' and '.join(unknown)} (run folders from before machine_id)" if unknown
                 else f"{a.run.name} on machine {a.machine}, {b.run.name} on {b.machine}")
        out.append(f"seed {q.seed}: {where} ({kind})")
    return out


# ---------------------------------------------------------------- text


def _num(value: float, fmt: str = ".4f", missing: str = "n/a") -> str:
    return format(value, fmt) if finite(value) else missing


def _duration(seconds: float) -> str:
    if not finite(seconds):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def stop_text(p: PlateauPoint) -> str:
    if p.reached:
        # a run from before summaries recorded plateau_iter, under another rule than the one replayed here
        return "plateau" if p.plateau_iter is not None else "plateau (where: not recorded, and not found by this rule)"
    reason = (p.run.summary or {}).get("stop_reason")
    if not p.run.finished:
        return f"not finished ({p.run.status_word})"
    return f"stopped by {reason or 'its cap'} before a plateau" if p.plateau_iter is None else \
        f"plateau at {p.plateau_iter:,}, then stopped by {reason} inside the cooldown"


def run_rows(points: list[PlateauPoint]) -> list[list[str]]:
    rows = []
    for p in sorted(points, key=lambda q: (q.run.attn != BASELINE, q.run.attn, q.run.batch, q.run.seed)):
        at = p.plateau_iter
        ep = p.epochs_at(at) if at is not None else math.nan
        rows.append([
            p.run.attn, str(p.run.seed), p.machine, stop_text(p),
            f"{at:,}" + (" (replayed)" if p.recomputed else "") if at is not None else "none",
            _duration(p.plateau_time_s), f"{p.total_iters:,}", _duration(p.total_time_s),
            f"{_num(p.final_loss)} ± {_num(p.final_se)}",
            f"{_num(p.best_loss)} @ {p.best_iter:,.0f}" if finite(p.best_iter) else "n/a",
            _num(p.gap_at_plateau, "+.4f"), _num(p.gap_at_end, "+.4f"),
            _num(ep, ".2f", "unknown"), _num(repeated_token_share(ep), ".0%", "unknown"),
        ])
    return rows


RUN_HEADERS = ["config", "seed", "machine", "stopped", "plateau at iter", "train time to plateau",
               "iterations (with cooldown)", "train time (with cooldown)", "final val_loss ± SE", "best val_loss @ iter",
               "val - train at plateau", "val - train at end", "epochs at plateau", "repeated tokens at plateau"]


def _mean_sd(values: list[float], show: Callable[[float], str]) -> str:
    values = [v for v in values if finite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return show(values[0])
    return f"{show(statistics.fmean(values))} ± {show(statistics.stdev(values))}"


def config_rows(points: list[PlateauPoint]) -> list[list[str]]:
    """The plan's full-test table: wall-clock to the plateau and final loss per config (seed mean ± sd)."""
    rows = []
    for attn in sorted({p.run.attn for p in points}, key=lambda a: (a != BASELINE, a)):
        done = [p for p in points if p.run.attn == attn and p.reached]
        seeds = ", ".join(str(s) for s in sorted({p.run.seed for p in done})) or "none"
        rows.append([attn, f"{len(done)} of {sum(p.run.attn == attn for p in points)}", seeds,
                     _mean_sd([p.plateau_time_s for p in done], _duration),
                     _mean_sd([p.total_time_s for p in done], _duration),
                     _mean_sd([float(p.plateau_iter) for p in done if p.plateau_iter is not None],
                              lambda v: f"{v:,.0f}"),
                     _mean_sd([p.final_loss for p in done], lambda v: f"{v:.4f}")])
    return rows


CONFIG_HEADERS = ["config", "reached a plateau", "seeds", "train time to plateau", "train time with cooldown",
                  "plateau at iter", "final val_loss"]


def criterion_3_line(candidate: str, pairs: list[PlateauPair]) -> str:
    if not pairs:
        return f"{candidate}: no pair of runs that both reached their plateau."
    # a seed trained in several folders counts once, its pairs averaged (paired_stats does it)
    stats: PairedStats = paired_stats([q.loss_margin for q in pairs], [q.seed for q in pairs])
    repeated = "" if stats.n == len(pairs) else f" ({len(pairs)} pairs over {stats.n} seeds, averaged per seed)"
    ratios = [q.time_ratio for q in pairs if finite(q.time_ratio) and not q.crosses_cards]
    time_text = (f"; train time to plateau {statistics.fmean(ratios):.2f}x {BASELINE}'s (mean over {len(ratios)} "
                 "pair(s) on one kind of card)" if ratios else "")
    return (f"{candidate}: {BASELINE} - {candidate} final val_loss {stats.text()}{repeated}: **{decide(stats)}**"
            f"{time_text}.")


def rule_text(points: list[PlateauPoint]) -> str:
    """The rule's settings as the runs used them (one line per distinct setting)."""
    settings = set()
    for p in points:
        c = p.run.config
        cool = (f"{c['cooldown_iters']} iterations" if c.get("cooldown_iters")
                else f"{c.get('cooldown_frac', 0.1):.0%} of the iterations at the plateau")
        settings.add(f"plateau when {c.get('plateau_patience', 5)} evaluations in a row (every {c.get('eval_every')} "
                     f"iterations) do not beat the best before them by {c.get('plateau_min_delta', 0.01)} nats; "
                     f"then the learning rate falls linearly to min_lr over {cool}")
    return "; ".join(sorted(settings))


def overfitting_names(points: list[PlateauPoint]) -> list[str]:
    """Runs past one epoch at their plateau whose train-val gap still grew through the cooldown."""
    return [p.run.where for p in points if p.reached and p.plateau_iter is not None
            and p.epochs_at(p.plateau_iter) > 1 and p.gap_at_end > p.gap_at_plateau]


def plateau_section(doc: Doc, runs: list[Run]) -> None:
    """The full test's section; nothing when no run went to a plateau."""
    points = [plateau_point(r) for r in runs if is_plateau_run(r)]
    if not points:
        return
    doc.heading(2, "The full test: to a val_loss plateau, then a cooldown")
    doc.para(f"Rule ({RULE_NOTE}): {rule_text(points)}. The reported loss is the last evaluation, after the "
             "cooldown, not the best one (the best is chosen on the val set that judges it). Train time counts "
             "training steps only. val - train is the val_loss minus the mean train_loss over the evaluation "
             "interval before it; epochs and the repeated-token share (windows drawn with replacement) say how much "
             "of what a run read at its plateau it had read before: a plateau after text comes round again can be "
             "over-fitting rather than convergence.")
    doc.table(CONFIG_HEADERS, config_rows(points))
    doc.table(RUN_HEADERS, run_rows(points))
    candidates = sorted({p.run.attn for p in points} - {BASELINE})
    lines, notes, crossings = [], [], []
    for cand in candidates:
        pairs, left = pair_points(points, cand)
        lines.append(criterion_3_line(cand, pairs))
        notes += left
        crossings += pairing_notes(pairs)
    overfit = overfitting_names(points)
    if overfit:
        doc.para(f"**Plateaus that read as over-fitting** (more than one epoch read at the plateau, and the val - train "
                 f"gap wider at the end than at the plateau): {', '.join(overfit)}.")
    if lines:
        doc.para("**Criterion 3 at the plateau** (paired by seed within one folder, margin 0, by the exact-test rule: "
                 "PASS only when the interval lies above zero and the sign-flip p is below 0.05; the verdict table "
                 "above pairs within one card and machine and uses the plan's margin):")
        doc.bullets(lines)
    if crossings:
        doc.para("**Pairs whose runs started on different machines, or on machines not recorded** (same seed, same "
                 "data order and the same initial weights, so their losses compare; their times only on one kind of "
                 "card):")
        doc.bullets(crossings)
    if notes:
        doc.para("**Not paired:**")
        doc.bullets(notes)
