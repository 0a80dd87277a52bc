"""Bootstrap intervals over users and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_llm.stats import bootstrap_ci, paired_bootstrap


def test_interval_covers_the_mean_with_the_textbook_width():
    x = np.random.default_rng(0).normal(0.3, 1.0, size=2000)
    ci = bootstrap_ci(x, n_boot=2000, seed=1)
    assert ci.low < 0.3 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.15)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)  # deterministic by seed


def test_nans_are_dropped_and_tiny_samples_have_no_interval():
    ci = bootstrap_ci(np.array([1.0, np.nan, 0.0, 1.0]))
    assert ci.mean == pytest.approx(2 / 3)
    one = bootstrap_ci(np.array([0.5, np.nan]))
    assert one.mean == 0.5 and np.isnan(one.low) and np.isnan(one.high)


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    base = rng.random(500)
    same = paired_bootstrap(base, base)
    assert same.diff == 0 and same.low == 0 and same.high == 0
    better = paired_bootstrap(base + 0.05 + rng.normal(0, 0.01, 500), base)
    assert better.low > 0 and better.p_value < 0.01 and better.diff == pytest.approx(0.05, abs=0.005)
    noise = rng.normal(0, 0.3, 500)
    noisy = paired_bootstrap(base + noise - noise.mean(), base)  # no true difference
    assert noisy.low < 0 < noisy.high and noisy.p_value > 0.05


def test_bad_shapes():
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), n_boot=1)
