"""Every batch plan under lab/batches/ loads and resolves with the suite's own plan reader, so a
plan written down before its runs cannot drift from the keys the suite accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rabench.stats import MIN_VERDICT_PAIRS, TOO_FEW
from rabench.suite.plan import load_plan, resolve_plan

PLANS = sorted((Path(__file__).parent / "batches").rglob("*.toml"))


def test_there_are_plans() -> None:
    assert len(PLANS) >= 3


@pytest.mark.parametrize("path", PLANS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_batch_plan_resolves(path: Path) -> None:
    plan = resolve_plan(load_plan(path))
    assert plan.attns and plan.seeds
    assert plan.attns[0] == "sdpa"  # every batch carries its own baseline


def test_plateau_1_runs_the_rule_of_the_plateau_note() -> None:
    """plateau-1 is the full test: it must train under the rule notes/plateau-rule.md fixed before
    any plateau run (evaluations every 1,000 iterations, a window of 5, 0.01 nats, a 10% cooldown,
    a cap of 10 x N), not the toy presets' default of an evaluation every 100 iterations."""
    from rabench.presets import PRESET_RECORDS
    from rabench.suite.jobs import plan_runs, train_config

    plan = resolve_plan(load_plan(Path(__file__).parent / "batches" / "next" / "plateau-1.toml"))
    runs = plan_runs(plan, None)
    assert plan.until_plateau and runs and {r.role for r in runs} == {"plateau"}
    cfg = train_config(plan, runs[0], Path("out"), "data", "plateau-1", progress_bar=False)
    rule = (cfg.eval_every, cfg.plateau_patience, cfg.plateau_min_delta, cfg.cooldown_frac, cfg.cooldown_iters)
    assert rule == (1000, 5, 0.01, 0.1, None)
    assert cfg.plateau_patience * cfg.eval_every == 5000  # the note's window in iterations
    preset = PRESET_RECORDS[plan.preset]
    assert cfg.max_iters == preset.plateau_cap_iters == 10 * preset.default_iters


NEXT = [p for p in PLANS if p.parent.name == "next"]


@pytest.mark.parametrize("path", NEXT, ids=lambda p: p.name)
def test_a_planned_batch_with_too_few_seeds_says_it_gives_a_direction_only(path: Path) -> None:
    """A plan written before its runs says what its seeds can carry: below MIN_VERDICT_PAIRS the
    exact sign-flip p cannot reach 0.05, so the report can only say TOO FEW PAIRS."""
    plan = resolve_plan(load_plan(path))
    comments = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    if len(plan.seeds) < MIN_VERDICT_PAIRS:
        assert TOO_FEW in comments and "direction only" in comments
