"""What the runs cannot carry: thin evidence, short runs, unstable runs, mixed code or calibration.

A verdict read without these would claim more than the runs show; the report prints them
beside the verdicts, in words, instead of choosing a weaker verdict word for the reader.
"""

from __future__ import annotations

import math
from collections import Counter

from rabench.analysis.criteria import Comparison, first_group
from rabench.analysis.curves import eval_curve, value_at
from rabench.analysis.lrsweep import edge_rate_notes
from rabench.analysis.report.wording import mean_of
from rabench.analysis.runs import BASELINE, ISO_TIME, PLATEAU, Batch, ConfigGroup, Run
from rabench.stats import FEW_PAIRS_NOTE, ONE_SEED_NOTE, wide_ratio_line

GATES_BARELY_MOVED = 0.05  # max |w - w_init| below this: RA has not yet learned what to do with its gates
STILL_FALLING = 0.02  # val_loss drop over the last quarter of a run above this: far from convergence
MIN_EVALS = 4  # fewer evaluations after iteration 0 than this: a curve is a few straight segments
VAL_RISE = 0.05  # val_loss this far above the run's best earlier evaluation: training became unstable
TRAIN_SPIKE = 1.0  # a logged train_loss this far above the median of the SPIKE_WINDOW records before it: a spike
SPIKE_WINDOW = 50

STABILITY_RULE = (f"val_loss more than {VAL_RISE} above its best earlier evaluation, or a logged train_loss more than "
                  f"{TRAIN_SPIKE} nat above the median of the {SPIKE_WINDOW} records before it")


def last_quarter_drop(run: Run) -> float:
    """How much val_loss fell over the last quarter of the run's iterations."""
    x, y = eval_curve(run, "iter")
    if len(x) < 3:
        return math.nan
    return float(value_at(x, y, 0.75 * x[-1])) - float(y[-1])


def largest_gate_move(groups: dict[str, ConfigGroup]) -> float | None:
    """The largest |w - w_init| of any judged run's gates; None where no run logged gates."""
    moved = [max(m.values()) for g in groups.values() for r in g.judged if (m := r.gate_movement())]
    return max(moved) if moved else None


def baseline_still_falling(groups: dict[str, ConfigGroup]) -> float:
    """The baseline's mean val_loss drop over the last quarter of its runs (NaN without baseline runs)."""
    sdpa = first_group(groups, BASELINE)
    return mean_of([last_quarter_drop(r) for r in (sdpa.judged if sdpa else [])])


def runs_are_short(groups: dict[str, ConfigGroup]) -> bool:
    """Gates barely moved or the baseline still falling at its end: a verdict holds for this length only."""
    moved = largest_gate_move(groups)
    return (moved is not None and moved < GATES_BARELY_MOVED) or baseline_still_falling(groups) > STILL_FALLING


def unstable(run: Run) -> bool:
    """Did val_loss rise past VAL_RISE above its best, or train_loss jump by TRAIN_SPIKE?"""
    return run.val_rise()[0] > VAL_RISE or run.train_loss_spike(SPIKE_WINDOW)[0] > TRAIN_SPIKE


def unstable_names(groups: dict[str, ConfigGroup]) -> list[str]:
    return sorted(r.where for g in groups.values() for r in g.judged if unstable(r))


def stability_lines(flagged: list[Run]) -> list[str]:
    """One line per run that became unstable, with where and by how much."""
    out = []
    for r in flagged:
        (rise, at), (jump, spike_at) = r.val_rise(), r.train_loss_spike(SPIKE_WINDOW)
        best = min(r.evals, key=lambda m: float(m["val_loss"]))
        parts = [f"best val_loss {float(best['val_loss']):.4f} at iteration {int(best['iter']):,}, final {r.final_val_loss:.4f}",
                 f"val_loss rose {rise:.3f} above its best by iteration {at:,.0f}" if rise > 0 else "val_loss never rose",
                 f"largest train_loss jump {jump:.2f} nats above the median of the {SPIKE_WINDOW} records before it "
                 f"(iteration {spike_at:,.0f})" if jump > 0 else "no train_loss jump"]
        out.append(f"`{r.where}`: " + "; ".join(parts))
    return out


def seed_count_caution(comparisons: list[Comparison]) -> list[str]:
    """One seed allows no verdict; a few give wide intervals and a direction only."""
    n_pairs = [v.stats.n for c in comparisons for v in c.verdicts if v.stats is not None]
    if n_pairs and max(n_pairs) < 2:
        return [f"one seed per comparison: no verdict is possible ({ONE_SEED_NOTE})"]
    if n_pairs and max(n_pairs) < 6:
        return [f"at most {max(n_pairs)} seed pairs: intervals are wide; {FEW_PAIRS_NOTE}"]
    return []


def short_run_cautions(groups: dict[str, ConfigGroup]) -> list[str]:
    """Gates that barely moved, curves of few points, a baseline still falling: the runs end too early."""
    out = []
    moved = largest_gate_move(groups)
    if moved is not None and moved < GATES_BARELY_MOVED:
        out.append(f"the learned gates moved by at most {moved:.3f} from their initial values: the runs are too short to show what RA learns")
    sparse = sorted({r.name for g in groups.values() for r in g.judged if len(r.trained_evals) < MIN_EVALS})
    if sparse:
        out.append(f"{len(sparse)} run(s) have fewer than {MIN_EVALS} evaluations after iteration 0 ({', '.join(sparse[:4])}"
                   f"{', ...' if len(sparse) > 4 else ''}): their curves are straight lines between few points, and answers read between them are rough")
    drop = baseline_still_falling(groups)
    if drop > STILL_FALLING:
        out.append(f"the baseline's val_loss still fell by {drop:.3f} over the last quarter of its run: far from convergence, so final losses are not converged losses")
    return out


def record_cautions(groups: dict[str, ConfigGroup]) -> list[str]:
    """Unreadable metrics lines and unstable runs: what a curve or a mean over few pairs hides."""
    out = []
    skipped = sorted(f"{r.name} ({r.skipped_records})" for g in groups.values() for r in g.runs if r.skipped_records)
    if skipped:
        out.append(f"metrics.jsonl lines skipped as unreadable or another run's, in {', '.join(skipped)}: "
                   "those runs' curves are read without them")
    cut = sorted(r.where for g in groups.values() for r in g.runs if r.summary_mismatch)
    if cut:
        out.append(f"{len(cut)} finished run(s) whose metrics.jsonl disagrees with their summary.json ({', '.join(cut)}): "
                   "a torn or truncated log would move their final losses, so they are set aside, never judged")
    shaky = unstable_names(groups)
    if shaky:
        out.append(f"{len(shaky)} judged run(s) became unstable ({', '.join(shaky)}): they stay in their pairs, and one such run "
                   "can dominate a mean over few pairs (see Training stability)")
    return out


def cautions(groups: dict[str, ConfigGroup], comparisons: list[Comparison]) -> list[str]:
    """Why the verdicts may say less than they seem to: thin evidence, in words."""
    return seed_count_caution(comparisons) + short_run_cautions(groups) + record_cautions(groups)


def mixed_code_notes(batches: list[Batch]) -> list[str]:
    """Batches whose runs (or calibration) came from more than one version of the code, saying which:
    runs of several versions may pair across them, and an iso-time budget sized with one version
    and trained with another is not exactly equal time."""
    return [f"`{b.name}` was made by {len(b.source_hashes)} versions of the code ({', '.join(b.source_hashes)}): "
            + mixed_code_detail(b) for b in batches if len(b.source_hashes) > 1]


def mixed_code_detail(batch: Batch) -> str:
    """Which part of a batch each code version made, and what that can mix."""
    counts = Counter(str(r.source_hash) for r in batch.runs if r.source_hash)
    text = "runs by " + (", ".join(f"{h} ({n} run{'s' if n > 1 else ''})" for h, n in sorted(counts.items()))
                         or "no recorded version")
    if len(counts) > 1:
        by_seed: dict[int, set[str]] = {}
        for r in batch.runs:
            by_seed.setdefault(r.seed, set()).add(str(r.source_hash))
        mixed = sorted(seed for seed, hashes in by_seed.items() if len(hashes) > 1)
        text += (f", so the runs of seed{'s' if len(mixed) > 1 else ''} {', '.join(map(str, mixed))} mix versions"
                 if mixed else ", each seed's runs by one of them (no pair mixes versions)")
    calibration = batch.calibration.get("source_hash")
    sized = [r for r in batch.runs if r.role == ISO_TIME and r.source_hash]
    other = [r for r in sized if str(r.source_hash) != str(calibration)]
    if calibration and other:
        which = "its iso-time runs" if len(other) == len(sized) else f"{len(other)} of its {len(sized)} iso-time runs"
        text += f"; {which} were sized by the calibration of {calibration}, other code than trained them"
    return text


def calibration_notes(batches: list[Batch]) -> list[str]:
    """Batches whose iso-time runs were sized with step ratios measured elsewhere: a calibration the
    suite kept under --reuse-calibration (suite.json "calibration_reuse"), or one whose recorded
    machine differs from its runs'. Equal time holds only where s was measured on the runs' machine."""
    out = []
    for b in batches:
        for entry in b.plan.get("calibration_reuse") or []:
            if isinstance(entry, dict):
                out.append(f"`{b.name}`: its calibration (measured {entry.get('calibration_measured_at') or 'at a time not recorded'}) "
                           f"was kept with `{entry.get('flag', '--reuse-calibration')}` on {entry.get('at') or 'a date not recorded'} "
                           f"across {'; '.join(map(str, entry.get('differences') or [])) or 'differences not recorded'}: "
                           "its iso-time runs were sized with step ratios measured elsewhere")
        measured_on = b.calibration.get("machine_id")
        trained_on = sorted({r.machine_id for r in b.runs if r.machine_id})
        if measured_on and trained_on and any(m != measured_on for m in trained_on):
            out.append(f"`{b.name}`: calibration measured on machine {measured_on}, runs trained on {', '.join(trained_on)}")
    return out


def wide_ratio_notes(batches: list[Batch]) -> list[str]:
    """Each batch's calibrated step ratios whose interval is wide (wide_ratio_line), for the configs
    that have runs in that batch (a ratio no run was sized from changes nothing: a run to a plateau is
    sized by none)."""
    out = []
    for b in batches:
        trained = {r.attn for r in b.runs if r.role != PLATEAU}
        for attn in sorted(set(b.calibration.get("configs") or {}) & trained):
            line = wide_ratio_line(attn, *(b.calibrated_ratio(attn) or (math.nan,) * 3))
            if line:
                out.append(f"`{b.name}`: {line}")
    return out


def all_cautions(groups: dict[str, ConfigGroup], comparisons: list[Comparison], batches: list[Batch]) -> list[str]:
    """Everything the verdict table and the terminal summary list under 'cannot carry'."""
    return (cautions(groups, comparisons) + mixed_code_notes(batches) + calibration_notes(batches) + wide_ratio_notes(batches)
            + edge_rate_notes(batches))
