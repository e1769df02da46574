"""rabench.stats on numbers small enough to check by hand: the exact-test verdict rule, Holm,
TOST equivalence and seeds counted once."""

from __future__ import annotations

import math

import pytest

from rabench.stats import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    TOO_FEW,
    decide,
    direction,
    equivalence_text,
    holm,
    paired_stats,
    seed_means,
    tost_p,
)


def test_an_interval_that_excludes_zero_is_not_enough_without_the_exact_test():
    # five equal margins and a small negative one: the t-interval lies above 0, but flipping
    # that one sign gives a larger sum, so 4 of 64 patterns are as extreme: p = 0.0625
    st = paired_stats([0.2] * 5 + [-0.01])
    assert st.lo > 0
    assert st.p_sign_flip == pytest.approx(4 / 64)
    assert decide(st) == INCONCLUSIVE
    assert decide(paired_stats([0.2] * 6)) == PASS  # p = 2/64


def test_fewer_than_six_seeds_give_a_direction_not_a_verdict():
    for n in range(2, 6):
        st = paired_stats([-0.1 - 0.01 * k for k in range(n)])
        assert st.hi < 0 and decide(st) == TOO_FEW
    st = paired_stats([-0.1, -0.12, 0.01])
    assert direction(st) == "mean below the margin 0, 1 of 3 seeds above"


def test_the_exact_test_is_taken_against_the_margin():
    st = paired_stats([0.05] * 6)
    assert decide(st, margin=0.0) == PASS
    assert decide(st, margin=0.1) == FAIL  # every seed below 0.1: p = 2/64 against it
    assert st.p_against(0.1) == pytest.approx(2 / 64)


def test_a_verdict_reads_the_p_its_decision_used(monkeypatch: pytest.MonkeyPatch):
    """PairedStats owns the p against a margin: decide and the Verdict read one computation."""
    from rabench import stats
    from rabench.analysis.criteria import Verdict

    st = paired_stats([0.05, 0.06, 0.04, 0.05, 0.07, 0.05])
    calls = []
    real = stats.sign_flip_p
    monkeypatch.setattr(stats, "sign_flip_p", lambda margins: calls.append(margins) or real(margins))
    assert decide(st, margin=0.1) == FAIL
    verdict = Verdict("1", FAIL, "", stats=st, margin=0.1)
    assert verdict.p == st.p_against(0.1) == pytest.approx(2 / 64) and verdict.p_text() == "p = 0.031"
    assert len(calls) == 1


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08 (raised to 0.09: monotone), 0.2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_tost_by_hand_with_two_seeds():
    # two seeds: mean 0.001, se = |a - b| / 2 = 0.001, df 1 (Cauchy: P(T >= t) = 1/2 - atan(t)/pi);
    # the binding side is mean >= +0.01: t = (0.01 - 0.001) / 0.001 = 9
    st = paired_stats([0.0, 0.002])
    assert tost_p(st, 0.01) == pytest.approx(0.5 - math.atan(9) / math.pi, rel=1e-6)
    assert equivalence_text(st, 0.01) == "equivalent within ±0.01 nats (TOST p = 0.035)"
    wide = paired_stats([-0.02, 0.02])
    assert tost_p(wide, 0.01) == pytest.approx(0.5 - math.atan(0.5) / math.pi, rel=1e-6)
    assert equivalence_text(wide, 0.01).startswith("equivalence within ±0.01 nats not shown")


def test_a_repeated_seed_counts_once():
    assert seed_means([7, 3, 7], [0.1, 0.5, 0.3]) == ([3, 7], [0.5, pytest.approx(0.2)])
    st = paired_stats([0.1, 0.5, 0.3], seeds=[7, 3, 7])
    assert st.n == 2 and st.mean == pytest.approx(0.35)
