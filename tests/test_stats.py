"""Bootstrap intervals over users and the paired bootstrap."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from recsys_llm.report import stats
from recsys_llm.report.stats import Interval, PairedDiff, bootstrap_ci, paired_bootstrap


def test_interval_covers_the_mean_with_the_textbook_width():
    x = np.random.default_rng(0).normal(0.3, 1.0, size=2000)
    ci = bootstrap_ci(x, n_boot=2000, seed=1)
    assert ci.mean == pytest.approx(x.mean())
    assert ci.low < 0.3 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x)), rel=0.15)


def test_deterministic_by_seed_and_chunking_bounds_memory(monkeypatch):
    x = np.random.default_rng(3).random(300)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2)
    y = x + np.random.default_rng(4).normal(0, 0.1, 300)
    assert paired_bootstrap(y, x, seed=5) == paired_bootstrap(y, x, seed=5)
    monkeypatch.setattr(stats, "_CHUNK", 1000)  # 3 resamples per chunk: many chunks, same kind of answer
    small = bootstrap_ci(x, n_boot=500, seed=1)
    assert small.low < x.mean() < small.high


def test_nans_are_dropped_and_tiny_samples_have_no_interval():
    ci = bootstrap_ci(np.array([1.0, np.nan, 0.0, 1.0]))
    assert ci.mean == pytest.approx(2 / 3) and 0.0 <= ci.low < ci.high <= 1.0
    one = bootstrap_ci(np.array([0.5, np.nan]))
    assert one.mean == 0.5 and math.isnan(one.low) and math.isnan(one.high)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([np.nan, np.nan])).to_dict().values())


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    base = rng.random(500)
    same = paired_bootstrap(base, base)
    assert (same.diff, same.low, same.high, same.p_value) == (0, 0, 0, 1.0)
    better = paired_bootstrap(base + 0.05 + rng.normal(0, 0.01, 500), base)
    assert better.low > 0 and better.p_value < 0.01 and better.diff == pytest.approx(0.05, abs=0.005)
    worse = paired_bootstrap(base, base + 0.05 + rng.normal(0, 0.01, 500))
    assert worse.high < 0 and worse.p_value < 0.01
    noise = rng.normal(0, 0.3, 500)
    noisy = paired_bootstrap(base + noise - noise.mean(), base)  # no true difference
    assert noisy.low < 0 < noisy.high and noisy.p_value > 0.05


def test_paired_bootstrap_drops_pairs_with_a_nan_on_either_side():
    a = np.array([1.0, np.nan, 0.5, 0.2, 0.9])
    b = np.array([0.5, 0.3, np.nan, 0.1, 0.4])
    r = paired_bootstrap(a, b, seed=0)
    assert r.diff == pytest.approx(np.mean([0.5, 0.1, 0.5]))
    assert r == paired_bootstrap(np.array([1.0, 0.2, 0.9]), np.array([0.5, 0.1, 0.4]), seed=0)
    single = paired_bootstrap(np.array([1.0, np.nan]), np.array([0.5, 0.5]))
    assert single.diff == 0.5 and math.isnan(single.low) and math.isnan(single.p_value)


def test_p_value_definition():
    # d = [-1, 3]: a resample's mean is -1, 1 or 3; P(mean* <= 0) = 1/4, so p = 2 * 1/4
    r = paired_bootstrap(np.array([0.0, 3.0]), np.zeros(2), n_boot=20000, seed=0)
    assert r.p_value == pytest.approx(0.5, abs=0.03)
    assert r.to_dict() == {"diff": r.diff, "low": r.low, "high": r.high, "p_value": r.p_value}
    assert isinstance(r, PairedDiff) and isinstance(bootstrap_ci(np.ones(3)), Interval)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), n_boot=1)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap(np.ones(3), np.ones(3), alpha=1.5)


def test_docstring_examples():
    assert doctest.testmod(stats).failed == 0
