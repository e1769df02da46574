"""Learning-rate sweeps in a report: final val_loss against lr per config, the rule the plan
wrote down before any run, and the rate it chose.

A sweep's "selection" runs (role "lr-sweep", folder `<attn>-lr<lr>-s<seed>`) train every config
at each listed rate on selection seeds; the verdict runs then train each config at its chosen
rate on fresh seeds, under the usual roles. The selection runs are shown here and never paired
in a verdict: choosing a rate and judging with the same seeds would reuse their noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rabench.analysis.document import Doc
from rabench.analysis.runs import LR_SWEEP, Batch, ConfigGroup
from rabench.stats import finite
from rabench.suite.folder import verdict_elsewhere_at

LR_SWEEP_PLOT = "lr_sweep.png"


@dataclass
class SweepPoint:
    """One config at one lr over its selection seeds."""

    config: str
    lr: float
    finals: dict[int, float]  # seed -> final val_loss

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals.values())

    def text(self) -> str:
        values = list(self.finals.values())
        spread = f" ± {statistics.stdev(values):.4f} (sd)" if len(values) > 1 else ""
        return f"{self.mean:.4f}{spread}"


def sweep_points(groups: dict[str, ConfigGroup]) -> list[SweepPoint]:
    """Every (config, lr) of the lr-sweep runs that finished, by config then lr."""
    points: dict[tuple[str, float], SweepPoint] = {}
    for label, g in groups.items():
        if g.role != LR_SWEEP:
            continue
        config = label.removesuffix(f" [{LR_SWEEP}]")
        for r in g.judged:
            lr = r.config.get("lr")
            if finite(lr):
                points.setdefault((config, float(lr)), SweepPoint(config, float(lr), {})).finals[r.seed] = r.final_val_loss
    return [points[k] for k in sorted(points)]


def sweep_plans(batches: list[Batch]) -> list[tuple[str, dict[str, Any]]]:
    """(batch, suite.json "lr_sweep") for every batch whose plan declares a sweep."""
    return [(b.name, b.plan["lr_sweep"]) for b in batches if isinstance(b.plan.get("lr_sweep"), dict)]


def best_by_config(points: list[SweepPoint]) -> dict[str, float]:
    """Each config's lr with the lowest mean final val_loss over its selection seeds (the
    default rule), to set beside the rate the plan's rule chose."""
    best: dict[str, SweepPoint] = {}
    for p in points:
        if p.config not in best or p.mean < best[p.config].mean:
            best[p.config] = p
    return {config: p.lr for config, p in best.items()}


def _rate(value: Any) -> str:
    """A rate as the plan gave it (6e-4 -> 0.0006); anything else as written, never an error."""
    return f"{value:g}" if finite(value) else str(value)


def rates_tried(plan: dict[str, Any], attn: str) -> list[float]:
    """The rates a config's selection tried: suite.json's "rates_tried" (the grid and what bracketing
    added), else the plan's grid (suites written before bracketing)."""
    tried = plan.get("rates_tried") if isinstance(plan.get("rates_tried"), dict) else {}
    rates = tried.get(attn) if isinstance(tried.get(attn), list) else plan.get("lrs")
    return sorted(float(x) for x in rates if finite(x)) if isinstance(rates, list) else []


def edge_rate_notes(batches: list[Batch]) -> list[str]:
    """Each config whose chosen rate is the smallest or largest rate its sweep tried: the optimum is
    not bracketed, so a rate beyond the grid may do better and the comparison may not be at its best rate."""
    out = []
    for name, plan in sweep_plans(batches):
        chosen = plan.get("chosen") if isinstance(plan.get("chosen"), dict) else {}
        for attn, lr in chosen.items():
            lrs = rates_tried(plan, attn)
            if len(lrs) < 2 or not finite(lr):
                continue
            low, high = lrs[0], lrs[-1]
            edge = (("largest", "larger") if math.isclose(lr, high) else
                    ("smallest", "smaller") if math.isclose(lr, low) else None)
            if edge:
                out.append(f"`{name}`: {attn}'s chosen lr {lr:g} is the {edge[0]} rate tried ({low:g} to {high:g}): "
                           f"the optimum is not bracketed, and a {edge[1]} rate may do better")
    return out


def added_rates(plan: dict[str, Any]) -> dict[str, list[float]]:
    """Per config, the rates bracketing added beyond the plan's grid."""
    grid = [float(x) for x in plan.get("lrs") if finite(x)] if isinstance(plan.get("lrs"), list) else []
    tried = plan.get("rates_tried") if isinstance(plan.get("rates_tried"), dict) else {}
    return {attn: [lr for lr in rates_tried(plan, attn) if not any(math.isclose(lr, g) for g in grid)]
            for attn in tried}


def bracketing_text(plan: dict[str, Any]) -> str:
    """The bracketing rule as suite.json states it and the rates it added so far."""
    added = "; ".join(f"{attn} {', '.join(map(_rate, lrs))}" for attn, lrs in added_rates(plan).items() if lrs)
    return f"bracketing: {plan['bracket_rule']}; added: {added or 'none'}"


def verdict_elsewhere_text(rate: Any, chosen: dict[str, Any]) -> str:
    """What the plan's verdict_exists_at did: no verdict runs here when every config chose that rate."""
    if not chosen:
        return f"verdict_exists_at {_rate(rate)}: if every config chooses it, its verdict is the one run elsewhere"
    if verdict_elsewhere_at(chosen, rate):
        return (f"verdict_exists_at {_rate(rate)}: every config chose it, so no verdict runs were planned here; "
                "the verdict at that rate is the one run elsewhere (the plan names it)")
    return f"verdict_exists_at {_rate(rate)}: not every config chose it, so the verdict runs here at the chosen rates"


def lr_sweep_section(doc: Doc, groups: dict[str, ConfigGroup], batches: list[Batch],
                     plot: Callable[[list[SweepPoint]], Path | None]) -> None:
    """The sweep's table, plot, rule and chosen rates; nothing when no sweep ran."""
    points, plans = sweep_points(groups), sweep_plans(batches)
    if not points and not plans:
        return
    doc.heading(2, "Learning-rate sweep (selection runs)")
    for name, plan in plans:
        chosen = plan.get("chosen") if isinstance(plan.get("chosen"), dict) else {}
        lrs, seeds = (plan.get(k) if isinstance(plan.get(k), list) else [] for k in ("lrs", "selection_seeds"))
        doc.bullets([
            f"`{name}`: rates {', '.join(map(_rate, lrs)) or 'not recorded'}; selection seeds "
            f"{', '.join(map(str, seeds)) or 'not recorded'}",
            f"rule (written in the plan before any run): {plan.get('rule') or 'not recorded'}",
            *([bracketing_text(plan)] if plan.get("bracket_rule") else []),
            "chosen: " + ("; ".join(f"{attn} {_rate(lr)}" for attn, lr in chosen.items()) if chosen else "none recorded"),
            *([verdict_elsewhere_text(plan["verdict_exists_at"], chosen)] if "verdict_exists_at" in plan else []),
        ])
    for note in edge_rate_notes(batches):
        doc.para(f"**Caution:** {note}.")
    if not points:
        doc.para("No finished selection run in this folder.")
        return
    best = best_by_config(points)
    doc.table(["config", "lr", "selection seeds", "final val_loss (mean over seeds)", "lowest mean"],
              [[p.config, f"{p.lr:g}", ",".join(map(str, sorted(p.finals))), p.text(), "yes" if best[p.config] == p.lr else ""]
               for p in points])
    doc.para("The verdicts elsewhere in this report use each config's chosen rate on fresh seeds; the selection runs "
             "are never paired in them.")
    doc.image(plot(points), "final val_loss against lr per config (selection seeds: points; mean: line)")

