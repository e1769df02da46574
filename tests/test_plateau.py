"""The --until-plateau stopping rule."""

import math

import pytest

from rabench.training.plateau import PlateauRule, plateau_index


def test_monotone_improvement_never_plateaus():
    rule = PlateauRule(patience=3, min_delta=0.01)
    assert not any(rule.update(5.0 - 0.05 * i) for i in range(200))


def test_flat_curve_plateaus_after_exactly_patience_evals():
    rule = PlateauRule(patience=4, min_delta=0.01)
    results = [rule.update(3.0) for _ in range(8)]
    # the first evaluation sets the best; the 4th evaluation without improvement plateaus
    assert results == [False, False, False, False, True, True, True, True]


def test_noise_smaller_than_min_delta_plateaus():
    rule = PlateauRule(patience=5, min_delta=0.01)
    noise = [0.004, -0.003, 0.002, -0.004, 0.001, -0.002, 0.003]
    results = [rule.update(3.2 + n) for n in noise]
    assert results.index(True) == 5


def test_small_steps_that_add_up_count_as_improvement():
    # 0.006 per eval never beats min_delta in one step, but beats the best every 2 steps
    assert plateau_index([4.0 - 0.006 * i for i in range(100)], patience=2, min_delta=0.01) is None


def test_improvement_resets_the_count_and_the_rule_stays_plateaued():
    rule = PlateauRule(patience=2, min_delta=0.01)
    assert [rule.update(v) for v in (3.0, 3.0, 2.5, 2.5)] == [False, False, False, False]
    assert rule.update(2.5) is True
    assert rule.update(1.0) is True  # sticky: the trainer stops at the first True


def test_nan_counts_as_no_improvement():
    rule = PlateauRule(patience=2, min_delta=0.01)
    assert [rule.update(v) for v in (3.0, math.nan, math.nan)] == [False, False, True]


def test_defaults_and_validation():
    rule = PlateauRule()
    assert (rule.patience, rule.min_delta) == (5, 0.01)
    assert "min_delta" in PlateauRule.__doc__ and "patience" in PlateauRule.__doc__
    with pytest.raises(ValueError):
        PlateauRule(patience=0)
