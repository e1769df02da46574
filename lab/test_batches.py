"""Every batch plan under lab/batches/ loads and resolves with the suite's own plan reader, so a
plan written down before its runs cannot drift from the keys the suite accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rabench.suite.plan import load_plan, resolve_plan

PLANS = sorted((Path(__file__).parent / "batches").rglob("*.toml"))


def test_there_are_plans() -> None:
    assert len(PLANS) >= 3


@pytest.mark.parametrize("path", PLANS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_batch_plan_resolves(path: Path) -> None:
    plan = resolve_plan(load_plan(path))
    assert plan.attns and plan.seeds
    assert plan.attns[0] == "sdpa"  # every batch carries its own baseline
