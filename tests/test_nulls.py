"""The shared null statistics on planted data: a planted null is accepted at about the nominal rate, a real
effect is rejected, and the claim's side (not the observed number's) decides."""

import numpy as np
import pytest

from vaxis.core import nulls


def test_claim_p_uses_the_claims_side_not_the_values():
    null = np.linspace(-1, 1, 19)
    assert nulls.claim_p(5.0, null, sign=1) == pytest.approx(1 / 20)
    # the same extreme value, opposite to a claim that says "low": it fails, it does not clear the null
    assert nulls.claim_p(5.0, null, sign=-1) == pytest.approx(1.0)
    assert nulls.claim_p(-5.0, null, sign=-1) == pytest.approx(1 / 20)
    assert np.isnan(nulls.claim_p(np.nan, null))
    with pytest.raises(ValueError, match="sign"):
        nulls.claim_p(0.0, null, sign=0)


def test_claim_p_is_uniform_under_a_planted_null():
    rng = np.random.default_rng(0)
    ps = np.array([nulls.claim_p(rng.normal(), rng.normal(size=19), 1) for _ in range(4000)])
    assert abs((ps <= 0.05).mean() - 0.05) < 0.015
    assert abs((ps <= 0.5).mean() - 0.5) < 0.03


def test_beyond_on_the_claims_side():
    null = np.arange(100.0)
    assert nulls.beyond(99.5, null, 1) is True
    assert nulls.beyond(50.0, null, 1) is False
    assert nulls.beyond(99.5, null, -1) is False
    assert nulls.beyond(-1.0, null, -1) is True
    assert nulls.beyond(50.0, null, -1) is False
    assert nulls.beyond(1.0, [], 1) is None


def test_min_draws():
    assert nulls.min_draws(0.05) == 19
    assert 1 / (nulls.min_draws(0.05) + 1) <= 0.05
    assert 1 / nulls.min_draws(0.05) > 0.05


def test_null_range():
    med, lo, hi = nulls.null_range(np.arange(101.0))
    assert (med, lo, hi) == pytest.approx((50.0, 2.5, 97.5))
    assert np.isnan(nulls.null_range([np.nan])[0])


def test_sign_flip_p_exact_and_sampled():
    # all positive differences of 5 units: only the observed pattern is as extreme, p = 1/32
    assert nulls.sign_flip_p([1, 2, 3, 4, 5], sign=1) == pytest.approx(1 / 32)
    assert nulls.sign_flip_p([1, 2, 3, 4, 5], sign=-1) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    real = rng.normal(0.8, 1, 40)
    assert nulls.sign_flip_p(real, 1, n_perm=2000) < 0.01
    ps = np.array([nulls.sign_flip_p(rng.normal(0, 1, 30), 1, n_perm=400, seed=i) for i in range(300)])
    assert abs((ps <= 0.1).mean() - 0.1) < 0.05


def test_paired_d_differs_from_pooled_when_units_vary():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 5, 50)  # large between-unit spread
    a, b = base + 1.0 + rng.normal(0, 0.5, 50), base + rng.normal(0, 0.5, 50)
    dz = nulls.paired_d(a, b)
    pooled = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert dz > 1.0 > pooled
    assert nulls.paired_d(b, a) == pytest.approx(-dz)
    assert np.isnan(nulls.paired_d([1.0], [0.0]))


def test_group_resamples_keep_units_whole():
    groups = np.repeat(["a", "b", "c"], [2, 3, 1])
    for idx in nulls.group_resamples(groups, 50, seed=3):
        drawn = groups[idx]
        for g, size in (("a", 2), ("b", 3), ("c", 1)):
            assert (drawn == g).sum() % size == 0
        assert len(idx) >= 3
