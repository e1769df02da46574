"""The report's learning-rate sweep section and the regime line every headline carries."""

from __future__ import annotations

import json
import math
from pathlib import Path

from test_analysis import SIX, comparison, iteration_suite, linear, write_run

from rabench.analysis import write_report


def _update_config(run: Path, **fields) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | fields))


def test_the_regime_names_data_tokens_epochs_and_settings_or_says_not_recorded(tmp_path):
    iteration_suite(tmp_path, (0, 1), lambda seed: 1.1 / 1000, s=1.2)
    md = write_report(tmp_path)[0].read_text()
    assert "regime: data not recorded; train split not recorded (epochs and repeated-token share not recorded)" in md
    for run in tmp_path.iterdir():
        if run.is_dir():
            _update_config(run, data_regime={"sources": ["english-mix"], "train_tokens": 100_000, "val_tokens": 5_000})
    md = write_report(tmp_path)[0].read_text()
    x = 1000 * 128 / 100_000  # sdpa's 1,000 iterations of 128 tokens over a 100,000-token split: 1.28 epochs
    share = 1 - (1 - math.exp(-x)) / x
    assert (f"regime: data english-mix; train split 100,000 tokens; 0.1M tokens read per run at N: 1.28 epochs, "
            f"{share:.0%} of the tokens read had been read before") in md
    assert "model tiny; batch 2 x 64 tokens; lr 0.0006 (every config); N = 1,000 iterations; 2 seeds (0-1)" in md


def test_lr_sweep_runs_get_their_own_section_and_are_never_paired(tmp_path):
    iteration_suite(tmp_path, SIX, lambda seed: 1.1 / 1000, s=1.2)
    rule = "lowest mean final val_loss at N over the selection seeds"
    (tmp_path / "suite.json").write_text(json.dumps({"max_iters": 1000, "lr_sweep": {
        "lrs": [3e-4, 6e-4, 1.2e-3], "selection_seeds": [100, 101], "rule": rule, "chosen": {"sdpa": 1.2e-3, "ra-triton": 6e-4}}}))
    finals = {3e-4: 4.3, 6e-4: 4.1, 1.2e-3: 4.0}
    for attn, shift in (("sdpa", 0.0), ("ra-triton", -0.05)):
        for lr, end in finals.items():
            for seed in (100, 101):
                target = end + shift + 0.01 * (seed - 100)
                run = write_run(tmp_path, attn, seed, linear(5.0, (5.0 - target) / 1000), 1000, 10.0, "baseline",
                                name=f"{attn}-lr{lr:g}-s{seed}")
                labels = json.loads((run / "config.json").read_text())["labels"] | {"role": "lr-sweep", "lr_stage": "selection"}
                _update_config(run, lr=lr, labels=labels)
    assert comparison(tmp_path).verdict("3").stats.n == 6  # the 12 selection runs never join a pair
    md = write_report(tmp_path)[0].read_text()
    section = md.split("## Learning-rate sweep (selection runs)")[1].split("\n## ")[0]
    assert f"rule (written in the plan before any run): {rule}" in section
    assert "chosen: sdpa 0.0012; ra-triton 0.0006" in section
    assert "| sdpa | 0.0012 | 100,101 | 4.0050 ± 0.0071 (sd) | yes |" in section
    assert "| ra-triton | 0.0003 | 100,101 | 4.2550 ± 0.0071 (sd) |  |" in section
    # sdpa chose the top of the grid: the optimum is not bracketed, said in the section and the cautions
    edge = ("`.`: sdpa's chosen lr 0.0012 is the largest rate tried (0.0003 to 0.0012): "
            "the optimum is not bracketed, and a larger rate may do better")
    assert f"**Caution:** {edge}." in section and "ra-triton's chosen lr" not in md
    assert f"- {edge}" in md.split("**What these runs cannot carry:**")[1].split("\n## ")[0]
    # the regime and seeds lines describe the verdict runs; the selection runs are named apart
    assert ("lr 0.0006 (every config); N = 1,000 iterations; 6 seeds (0-5); lr-sweep selection runs (never paired): "
            "rates 0.0003, 0.0006, 0.0012 on 2 seeds (100-101)") in md
    assert "- seeds: 0, 1, 2, 3, 4, 5; lr-sweep selection seeds (never paired): 100, 101\n" in md
    assert (tmp_path / "lr_sweep.png").is_file()
    # a hand-edited plan with odd values is printed as written, never a traceback
    (tmp_path / "suite.json").write_text(json.dumps({"lr_sweep": {"lrs": "3e-4", "chosen": {"sdpa": "high"}}}))
    md = write_report(tmp_path)[0].read_text()
    assert "rates not recorded" in md and "chosen: sdpa high" in md


def test_a_sweep_still_selecting_names_its_selection_runs_and_no_verdict_runs(tmp_path):
    """Before the verdict runs exist, the regime line and the seeds line say so instead of
    describing the selection runs as if a verdict used them."""
    (tmp_path / "suite.json").write_text(json.dumps({"max_iters": 1000, "lr_sweep": {
        "lrs": [6e-4, 1.2e-3], "selection_seeds": [100], "rule": "lowest mean", "chosen": {}}}))
    for lr in (6e-4, 1.2e-3):
        run = write_run(tmp_path, "sdpa", 100, linear(5.0, 0.001), 1000, 10.0, "baseline", name=f"sdpa-lr{lr:g}-s100")
        labels = json.loads((run / "config.json").read_text())["labels"] | {"role": "lr-sweep", "lr_stage": "selection"}
        _update_config(run, lr=lr, labels=labels)
    md = write_report(tmp_path)[0].read_text()
    assert "; no verdict run yet; lr-sweep selection runs (never paired): rates 0.0006, 0.0012 on 1 seed (100)" in md
    assert "- seeds: no verdict run yet; lr-sweep selection seeds (never paired): 100\n" in md


def test_a_bracketed_sweep_names_its_added_rates_and_judges_the_edge_on_the_rates_tried(tmp_path):
    """sdpa's chosen rate is the grid's smallest but bracketing tried below it: the optimum is
    bracketed, no caution; ra-triton's added rate won and its budget was spent: the caution names
    the rates it tried, not the grid."""
    rule = "where a config's best rate is the smallest (largest) it has tried, ..."
    (tmp_path / "suite.json").write_text(json.dumps({"max_iters": 1000, "lr_sweep": {
        "lrs": [6e-4, 1.2e-3], "selection_seeds": [100], "rule": "lowest mean", "bracket_rule": rule,
        "rates_tried": {"sdpa": [3e-4, 6e-4, 1.2e-3], "ra-triton": [3e-4, 6e-4, 1.2e-3]},
        "chosen": {"sdpa": 6e-4, "ra-triton": 3e-4}}}))
    for attn, finals in (("sdpa", {3e-4: 4.2, 6e-4: 4.0, 1.2e-3: 4.1}), ("ra-triton", {3e-4: 3.9, 6e-4: 4.0, 1.2e-3: 4.1})):
        for lr, end in finals.items():
            run = write_run(tmp_path, attn, 100, linear(5.0, (5.0 - end) / 1000), 1000, 10.0, "baseline",
                            name=f"{attn}-lr{lr:g}-s100")
            labels = json.loads((run / "config.json").read_text())["labels"] | {"role": "lr-sweep", "lr_stage": "selection"}
            _update_config(run, lr=lr, labels=labels)
    md = write_report(tmp_path)[0].read_text()
    section = md.split("## Learning-rate sweep (selection runs)")[1].split("\n## ")[0]
    assert f"bracketing: {rule}; added: sdpa 0.0003; ra-triton 0.0003" in section
    assert "sdpa's chosen lr" not in md
    assert ("ra-triton's chosen lr 0.0003 is the smallest rate tried (0.0003 to 0.0012): the optimum is not "
            "bracketed") in section


def test_the_header_names_plan_changes_made_after_runs_and_survives_a_hand_edited_entry(tmp_path):
    iteration_suite(tmp_path, (0, 1), lambda seed: 1.1 / 1000, s=1.2)
    suite = json.loads((tmp_path / "suite.json").read_text()) if (tmp_path / "suite.json").is_file() else {}
    (tmp_path / "suite.json").write_text(json.dumps(suite | {"plan_changes": [
        {"at": "2026-12-06T21:00:00Z", "changed": {"lr_bracket": [0, 2], "verdict_exists_at": [None, 6e-4]}},
        {"changed": "not a table"}, "junk"]}))
    md = write_report(tmp_path)[0].read_text()
    assert ("- plan changed after runs had finished (suite.json `plan_changes`): `.` at 2026-12-06T21:00:00Z: "
            "lr_bracket 0 -> 2, verdict_exists_at unset -> 0.0006\n") in md
