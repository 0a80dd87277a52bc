"""Uncertainty over users: percentile-bootstrap intervals and the paired bootstrap of two models.

Both resample *users* with replacement (the unit that varies between evaluations), vectorised: an
``(n_boot, n)`` index matrix drawn in chunks, never a Python loop over resamples.

Example:
    >>> import numpy as np
    >>> a = np.r_[np.ones(60), np.zeros(40)]
    >>> ci = bootstrap_ci(a, seed=0)
    >>> round(ci.mean, 2), ci.low < 0.6 < ci.high
    (0.6, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

_CHUNK = 1 << 22  # resampled cells per chunk (~32 MB of float64)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDiff:
    diff: float
    low: float
    high: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _boot_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, same size) of ``values``: ``(n_boot,)``."""
    rng = np.random.default_rng(seed)
    n = len(values)
    rows = max(1, _CHUNK // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) resampled user positions
        out[start : start + b] = values[idx].mean(axis=1)
    return out


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 10:
        raise ValueError(f"n_boot={n_boot}: need at least 10 resamples")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}: must be in (0, 1)")


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean over users.

    ``mean = (1/n) sum_u v_u``; the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the means of
    ``n_boot`` resamples of the ``n`` users with replacement. NaN values (users without targets) are dropped
    first; with fewer than 2 users the interval is ``(nan, nan)``.

    Args:
        values: ``(n,)`` per-user metric values.
        n_boot: resamples. alpha: 0.05 gives a 95% interval. seed: seed of the resampling.
    """
    _check(n_boot, alpha)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (one per user); got shape {v.shape}")
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan)
    if len(v) < 2:
        return Interval(float(v.mean()), math.nan, math.nan)
    means = _boot_means(v, n_boot, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(v.mean()), float(low), float(high))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> PairedDiff:
    """Paired bootstrap of ``mean(a - b)`` over the same users.

    ``d_u = a_u - b_u`` for users where neither is NaN; ``diff = mean(d)``; the interval is the percentile
    bootstrap interval of ``mean(d)`` (users resampled, so both models see the same resample). The two-sided
    p-value is ``min(1, 2 * min(P*(mean* <= 0), P*(mean* >= 0)))`` over the bootstrap means ``mean*``: how
    often a resample lands on the other side of zero, doubled. It is a bootstrap approximation (resolution
    ``1 / n_boot``), reported next to the interval rather than instead of it.

    Raises:
        ValueError: ``a`` and ``b`` are not 1-D arrays of the same length.
    """
    _check(n_boot, alpha)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must be 1-D per-user values of the same users")
    d = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if len(d) < 2:
        return PairedDiff(float(d.mean()) if len(d) else math.nan, math.nan, math.nan, math.nan)
    means = _boot_means(d, n_boot, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedDiff(float(d.mean()), float(low), float(high), p)
