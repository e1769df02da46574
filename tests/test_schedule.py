"""The learning-rate schedule is keyed to the run's own length, in iterations or in train time."""

from __future__ import annotations

import pytest

from rabench.training.config import TrainConfig, curve_changing_differences
from rabench.training.schedule import make_schedule


def test_iteration_run_warms_up_then_reaches_min_lr_at_its_last_step() -> None:
    s = make_schedule(1.0, 0.1, max_iters=100, time_budget_s=None, warmup_frac=0.1, warmup_iters=None)
    assert s.unit == "it" and s.warmup == 10
    assert s.at(0, 1) == pytest.approx(0.1)  # step 0 ends at iteration 1 of a 10-iteration warm-up
    assert s.at(9, 10) == pytest.approx(1.0)
    assert s.at(54, 55) == pytest.approx(0.55)  # half-way through the cosine (iterations 10..100)
    assert s.at(99, 100) == pytest.approx(0.1)


def test_time_run_warms_up_over_a_fraction_of_its_budget_and_anneals_by_its_end() -> None:
    s = make_schedule(1.0, 0.1, max_iters=None, time_budget_s=60.0, warmup_frac=0.05, warmup_iters=None)
    assert s.unit == "s" and s.warmup == pytest.approx(3.0)
    assert s.at(0, 1.5) == pytest.approx(0.5)  # by time, whatever the step count
    assert s.at(5000, 3.0) == pytest.approx(1.0)
    assert s.at(10, 31.5) == pytest.approx(0.55)
    assert s.at(10, 60.0) == pytest.approx(0.1)
    assert s.at(10, 90.0) == pytest.approx(0.1)  # past the budget: stays at min_lr


def test_explicit_warmup_iters_count_iterations_even_in_a_time_run() -> None:
    s = make_schedule(1.0, 0.1, max_iters=None, time_budget_s=60.0, warmup_frac=0.05, warmup_iters=4)
    assert s.at(1, 50.0) == pytest.approx(0.5)
    assert s.at(3, 0.0) == pytest.approx(1.0)  # warm-up over; the cosine starts from the budget's start


def test_plateau_schedule_holds_then_cools_down_to_min_lr() -> None:
    s = make_schedule(1.0, 0.1, max_iters=1000, time_budget_s=None, warmup_frac=0.0, warmup_iters=10,
                      until_plateau=True, cooldown_iters=20)
    assert s.at(50, 51) == 1.0
    assert s.at(60, 61, cooldown_start=50) == pytest.approx(0.505)
    assert s.at(69, 70, cooldown_start=50) == pytest.approx(0.1)


def test_curve_changing_differences_ignore_neutral_fields() -> None:
    old = TrainConfig(attn="sdpa", data="d", out="o", preset="tiny", max_iters=10, device="cpu").resolved().to_dict()
    old |= {"device": "cpu", "world_size": 1}
    same = TrainConfig(attn="sdpa", data="d", out="o2", preset="tiny", max_iters=10, device="cpu", log_every=3,
                       progress_bar=False, labels={"role": "x"}, ckpt_every="50it")
    assert curve_changing_differences(old, same) == []
    # 2 processes x accumulation 1 read the same rows as 1 process x accumulation 2
    assert curve_changing_differences(old | {"grad_accum": 2}, same, world_size=2) == []
    other = TrainConfig(attn="sdpa", data="d", out="o", preset="tiny", max_iters=10, device="cpu", lr=0.03,
                        warmup_frac=0.2)
    diffs = curve_changing_differences(old, other)
    assert [d.split(":")[0] for d in diffs] == ["lr", "warmup_frac"]
    assert curve_changing_differences(old, same, world_size=2)[0].startswith("grad_accum x processes")


def test_curve_changing_differences_compare_data_as_resolved_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    old = TrainConfig(attn="sdpa", data="d", out="o", preset="tiny", max_iters=10, device="cpu").resolved().to_dict()
    old |= {"device": "cpu", "world_size": 1}
    absolute = TrainConfig(attn="sdpa", data=str(tmp_path / "d"), out="o", preset="tiny", max_iters=10, device="cpu")
    assert curve_changing_differences(old, absolute) == []
    other = TrainConfig(attn="sdpa", data=str(tmp_path / "e"), out="o", preset="tiny", max_iters=10, device="cpu")
    assert [d.split(":")[0] for d in curve_changing_differences(old, other)] == ["data"]
