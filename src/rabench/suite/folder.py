"""The one owner of a suite folder's layout: its files, its run-folder names and the roles runs play.

The suite writes these names and the report reads them from here, so what one writes and the
other looks for cannot drift apart (rundir.py owns what is inside each run folder).

Files in the suite folder (read by the report):
  suite.json        the resolved plan (design, budgets, attentions, seeds, options, [train]),
                    "runs": [{name, attn, seed, role, max_iters, time_budget_s, step_ratio}] and
                    "calibration_reuse": [{flag, at, calibration_measured_at, differences}], one per
                    call that kept a calibration from another machine, card or code,
                    "plan_changes": [{at, changed: {setting: [old, new]}}], one per call whose plan
                    differed after runs had finished, and with an lr sweep "lr_sweep": {lrs,
                    selection_seeds, rule, chosen, rates_tried, bracket_rule?, verdict_exists_at?}
  calibration.json  {"card", "host", "machine_id", "source_hash", "device", "compiled", "baseline": "sdpa",
                    "steps_per_window", "windows", "settings" (what a reuse must match), "measured_at",
                    "configs": {attn: {"ms_per_iter", "ms_ci95", "ratio", "ratio_ci95",
                                       "windows_ms", "attn_options", "attn_code_hash"}}}
  calibration.log   the calibration worker's output (when it ran beside the runs)
  <attn>-s<seed>/, <attn>-isotime-s<seed>/, <attn>-ladder<r>-s<seed>/, <attn>-lr<lr>-s<seed>/   run
                    folders; config.json's labels say the role (a ladder run's labels.ladder_ratio is its r)
                    (an iso-iteration run started before the calibration has no step_ratio label)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rabench import attention
from rabench.errors import RabenchError
from rabench.fileio import write_json_atomic
from rabench.rundir import read_json
from rabench.stats import finite

SUITE_FILE = "suite.json"
CALIBRATION_FILE = "calibration.json"
CALIBRATION_LOG = "calibration.log"
MEASURING_FILE = "calibration.measuring.json"  # a calibration worker's result, until the suite takes it in

# Roles the suite gives runs (config.json labels.role)
BASE_ROLE = "baseline"  # the baseline for N iterations (iso design)
ISO_ITER = "iso-iter"  # a candidate for N iterations
ISO_TIME = "iso-time"  # a candidate for round(N / s) iterations, s its calibrated step-time ratio
LADDER = "ladder"  # a candidate for round(N / r) iterations, r a step ratio of the plan's length ladder
LR_SWEEP = "lr-sweep"  # a selection run of a learning-rate sweep
TIME = "time"  # design time: a run for the plan's training time
PLATEAU = "plateau"  # a run to its val_loss plateau
ISOTIME_TAG = "-isotime-"  # in an iso-time run's folder name (how runs without labels are recognised)


def verdict_elsewhere_at(chosen: dict[str, Any], rate: Any) -> bool:
    """Did every config of an lr sweep choose `rate`, the plan's verdict_exists_at? Its verdict is
    then the one run elsewhere: the suite plans none (suite.jobs) and the report says so
    (analysis.lrsweep). Values read from a hand-edited suite.json that are not numbers never match."""
    return bool(chosen) and finite(rate) and all(finite(lr) and math.isclose(lr, rate) for lr in chosen.values())


def pairs_across_machines(role: str) -> bool:
    """Whether a seed's runs of this role pair although they started on different machines: runs
    to a plateau do (they outlive a device lease and resume wherever one is lent; the report says
    when a pair crosses machines), every fixed-length run pairs only on its own machine. The report
    pairs by this rule (analysis.pairing) and the suite warns by it (suite.jobs)."""
    return role == PLATEAU


def run_name(attn: str, seed: int, role: str = "", ladder_ratio: float | None = None, lr: float | None = None) -> str:
    """Folder name; a plug-in reference (x/diff.py:DiffAttention) is named by its class (diff-attention)."""
    name = attention.folder_name(attn)
    if role == LADDER:
        return f"{name}-ladder{ladder_ratio:g}-s{seed}"
    if role == LR_SWEEP:
        return f"{name}-lr{lr:g}-s{seed}"
    return f"{name}{ISOTIME_TAG}s{seed}" if role == ISO_TIME else f"{name}-s{seed}"


def read_calibration(out: Path) -> dict[str, Any] | None:
    """calibration.json's content, or None when there is none."""
    path = out / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RabenchError(f"{path} is not valid JSON; delete it or pass --recalibrate") from None


def write_calibration(out: Path, record: dict[str, Any]) -> None:
    write_json_atomic(out / CALIBRATION_FILE, record, "calibration", default=str)


def read_suite_record(out: Path) -> dict[str, Any]:
    """suite.json's content ({} when there is none)."""
    return read_json(out / SUITE_FILE) or {}


def write_suite_record(out: Path, record: dict[str, Any]) -> None:
    write_json_atomic(out / SUITE_FILE, record, "suite record")
