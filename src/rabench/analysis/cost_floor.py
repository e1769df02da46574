"""The cost floor beside s and s*: what an implementation as efficient as the baseline's would reach.

Why: a candidate slower than its break-even s* might still pay with a better kernel, unless its
math alone costs more than s* allows. The floor (rabench.flops.floor_ratio: step FLOPs over the
baseline's, each core's declared attention FLOPs plus the shared rest of the model) is the
step-time ratio at the baseline's efficiency per FLOP. When every seed's s* is below it, no
implementation of this math can make the candidate pay at this scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rabench.analysis.criteria import Comparison
from rabench.analysis.document import Doc
from rabench.analysis.runs import ConfigGroup, iso_time_label
from rabench.attention.registry import builtin_names
from rabench.errors import RabenchError


@dataclass
class Floor:
    """One comparison's floor and the largest s* any of its seeds allows."""

    candidate: str
    baseline: str
    floor: float | None  # None: the FLOPs could not be counted (why in `reason`)
    s_star_max: float | None  # None: no seed bounds s* from above
    source: str  # where s_star_max comes from
    reason: str = ""

    @property
    def cannot_pay(self) -> bool:
        return self.floor is not None and self.s_star_max is not None and self.s_star_max < self.floor


STEP_FLOPS_FIELD = "step_flops_per_token"  # config.json: recorded by the trainer


def run_config(label: str, groups: dict[str, ConfigGroup]) -> dict[str, Any] | None:
    """config.json of one run of `label` (or of its iso-time runs, when it has only those)."""
    for key in (label, iso_time_label(label)):
        group = groups.get(key)
        if group is not None and group.runs:
            return group.runs[0].config
    return None


def config_step_flops(config: dict[str, Any]) -> float:
    """FLOPs per token of one run's training step: as the trainer recorded it (the attention's own
    declaration, plug-ins included), else counted from its attention, options, preset and seq_len."""
    if config.get(STEP_FLOPS_FIELD) is not None:
        return float(config[STEP_FLOPS_FIELD])
    from rabench.flops import step_flops_per_token
    from rabench.model import preset

    return step_flops_per_token(str(config["attn"]), preset(str(config["preset"])), int(config["seq_len"]),
                                config.get("attn_options") or {})


def largest_s_star(c: Comparison) -> tuple[float | None, str]:
    """The largest s* over seeds, each seed's value or upper bound: from run lengths where they
    measured every seed, else from the curves (an upper bound itself: it leans high)."""
    lengths = c.lengths
    if lengths is not None and lengths.measured and len(lengths.measured) == len(lengths.seeds):
        uppers = []
        for seed in lengths.measured:
            kind, r = seed.crossing()
            uppers.append(math.inf if kind == "above" else r)
        top = max(uppers)
        return (None if math.isinf(top) else top), "run lengths"
    be = c.breakeven
    if be is None or not (be.values or be.never):
        return None, "none"
    return max(be.values + be.bounds), "curve"


def comparison_floor(c: Comparison, groups: dict[str, ConfigGroup]) -> Floor:
    s_max, source = largest_s_star(c)
    configs = [run_config(c.candidate, groups), run_config(c.baseline, groups)]
    if any(cfg is None or "seq_len" not in cfg or "preset" not in cfg for cfg in configs):
        return Floor(c.candidate, c.baseline, None, s_max, source, "runs that record no preset or seq_len")
    plugins = [str(cfg.get("attn")) for cfg in configs
               if cfg.get("attn") not in builtin_names() and cfg.get(STEP_FLOPS_FIELD) is None]
    if plugins:  # the report never imports a plug-in: its verdict must not depend on what is importable here
        return Floor(c.candidate, c.baseline, None, s_max, source,
                     f"plug-in {plugins[0]}: its runs record no {STEP_FLOPS_FIELD}, and the report does not import it")
    try:
        cand, base = (config_step_flops(cfg) for cfg in configs)
        return Floor(c.candidate, c.baseline, cand / base, s_max, source)
    except (RabenchError, KeyError, ValueError, TypeError) as exc:  # a plug-in gone, an option renamed
        return Floor(c.candidate, c.baseline, None, s_max, source, f"FLOPs not countable here: {exc}")


def measured_s(c: Comparison) -> str:
    ratios = c.breakeven.ratios if c.breakeven else {}
    return "; ".join(f"{r.s:.3f}" for r in ratios.values() if math.isfinite(r.s)) or "n/a"


def verdict_sentence(f: Floor) -> str:
    return (f"{f.candidate}: s* <= {f.s_star_max:.3f} in every seed (from {f.source}), below its floor {f.floor:.3f}: "
            f"no implementation of this math can make it pay at this scale, because even at {f.baseline}'s "
            f"efficiency per FLOP its step would cost {f.floor:.3f}x {f.baseline}'s.")


def cost_floor_section(doc: Doc, comparisons: list[Comparison], groups: dict[str, ConfigGroup]) -> None:
    """The table of s, s* and the floor per comparison, and the sentence where s* is below the floor."""
    floors = [comparison_floor(c, groups) for c in comparisons if c.breakeven is not None or c.lengths is not None]
    if not floors:
        return
    doc.heading(2, "Cost floor: the step-time ratio at the baseline's efficiency")
    doc.para("floor = the candidate's FLOPs per training step over the baseline's (each attention's declared FLOPs, "
             "causal, forward + backward, plus 6 FLOPs per matmul weight per token for the rest of the model; see "
             "rabench.flops): the step-time ratio s an implementation as efficient per FLOP as the baseline's would "
             "reach. s above the floor is implementation overhead a better kernel could remove; s* below the floor "
             "cannot be reached by any kernel.")
    by_name = {c.candidate + "|" + c.baseline: c for c in comparisons}
    rows = []
    for f in floors:
        c = by_name[f.candidate + "|" + f.baseline]
        s_star = f"<= {f.s_star_max:.3f} ({f.source})" if f.s_star_max is not None else "no upper bound"
        floor = f"{f.floor:.3f}" if f.floor is not None else f"n/a ({f.reason})"
        rows.append([f.candidate, f.baseline, measured_s(c), s_star, floor])
    doc.table(["candidate", "baseline", "s (measured)", "s* (largest over seeds)", "floor (FLOPs ratio)"], rows)
    doc.bullets([verdict_sentence(f) for f in floors if f.cannot_pay])
