"""Uncertainty over users: percentile-bootstrap intervals and the paired bootstrap of two models.

Both resample *users* with replacement (the unit that varies between evaluations), vectorised: an
``(n_boot, n)`` matrix of resampled user positions is drawn in chunks of at most ``_CHUNK`` cells (bounded
memory whatever ``n_boot * n``), never a Python loop over resamples. Results are deterministic given the
input, ``n_boot`` and ``seed``.

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

_CHUNK = 1 << 22  # resampled cells per chunk: ~32 MB of int64 positions + ~32 MB of gathered float64 values


@dataclass(frozen=True)
class Interval:
    """Mean over users and its bootstrap interval ``[low, high]`` (NaN when it cannot be estimated)."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDiff:
    """``diff = mean(a - b)`` over users, its bootstrap interval and the two-sided bootstrap p-value."""

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
    for start in range(0, n_boot, rows):  # a loop over chunks of resamples, each chunk vectorised
        b = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) resampled user positions
        out[start : start + b] = values[idx].mean(axis=1)
    return out


def _check(n_boot: int, alpha: float) -> None:
    if int(n_boot) != n_boot or n_boot < 10:
        raise ValueError(f"n_boot={n_boot}: need an integer number of resamples, at least 10")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}: must be in (0, 1)")


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean over users.

    With ``v_1..v_n`` the per-user values left after dropping NaN (users without targets):

    - ``mean = (1/n) * sum_u v_u``;
    - for ``b = 1..n_boot`` draw ``n`` users with replacement and take their mean ``m*_b``;
    - ``low, high = quantile(m*, alpha/2), quantile(m*, 1 - alpha/2)`` (linear interpolation).

    With ``n == 1`` the result is ``Interval(v_1, nan, nan)``; with ``n == 0`` all three are NaN.

    Args:
        values: ``(n,)`` per-user metric values; NaN entries are dropped.
        n_boot: number of resamples (at least 10).
        alpha: ``0.05`` gives a 95% interval.
        seed: seed of the resampling (same inputs and seed -> same interval).

    Raises:
        ValueError: ``values`` is not 1-D, ``n_boot < 10`` or ``alpha`` is not in ``(0, 1)``.

    Example:
        >>> import numpy as np
        >>> ci = bootstrap_ci(np.array([0.0, 1.0, np.nan, 1.0, 0.0]), n_boot=200, seed=0)
        >>> ci.mean, 0.0 <= ci.low < 0.5 < ci.high <= 1.0
        (0.5, True)
        >>> bootstrap_ci(np.array([0.3, np.nan]))
        Interval(mean=0.3, low=nan, high=nan)
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
    means = _boot_means(v, int(n_boot), seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(v.mean()), float(low), float(high))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> PairedDiff:
    """Paired bootstrap of ``mean(a - b)`` over the same users.

    ``a[u]`` and ``b[u]`` are two models' values for the same user ``u``. Users where either side is NaN are
    dropped; over the ``n`` remaining users ``d_u = a_u - b_u`` and:

    - ``diff = (1/n) * sum_u d_u``;
    - ``m*_1..m*_B`` (``B = n_boot``) are the means of ``d`` over ``B`` resamples of the users with
      replacement (both models see the same resampled users: that is the pairing);
    - ``low, high = quantile(m*, alpha/2), quantile(m*, 1 - alpha/2)``;
    - ``p_value = min(1, 2 * min(#{b: m*_b <= 0}, #{b: m*_b >= 0}) / B)``.

    The p-value is twice the fraction of bootstrap means on the other side of zero from the bulk of the
    bootstrap distribution (for ``diff > 0`` in practice ``2 * #{m*_b <= 0} / B``), capped at 1; resamples
    exactly at 0 count on both sides (conservative). So ``p_value < alpha`` iff the ``1 - alpha`` percentile
    interval excludes 0, up to quantile interpolation. It is a bootstrap approximation with resolution
    ``1 / B``: ``0.0`` means fewer than one resample in ``B`` crossed zero (read ``p < 1/B``, never exactly 0).
    Identical inputs give ``diff = low = high = 0`` and ``p_value = 1``. With ``n == 1`` only ``diff`` is
    defined (the rest NaN); with ``n == 0`` all four are NaN.

    Args:
        a, b: ``(n_users,)`` per-user values of two models on the same users, in the same order.
        n_boot: number of resamples (at least 10).
        alpha: ``0.05`` gives a 95% interval.
        seed: seed of the resampling.

    Raises:
        ValueError: ``a`` and ``b`` are not 1-D arrays of the same length, ``n_boot < 10`` or ``alpha`` is
            not in ``(0, 1)``.

    Example:
        >>> import numpy as np
        >>> b = np.linspace(0.0, 1.0, 200)
        >>> r = paired_bootstrap(b + 0.1, b, seed=0)  # a is better by 0.1 on every user
        >>> round(r.diff, 6), round(r.low, 6), round(r.high, 6), r.p_value
        (0.1, 0.1, 0.1, 0.0)
        >>> paired_bootstrap(b, b).to_dict()
        {'diff': 0.0, 'low': 0.0, 'high': 0.0, 'p_value': 1.0}
    """
    _check(n_boot, alpha)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must be 1-D per-user values of the same users")
    d = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if len(d) < 2:
        return PairedDiff(float(d.mean()) if len(d) else math.nan, math.nan, math.nan, math.nan)
    means = _boot_means(d, int(n_boot), seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedDiff(float(d.mean()), float(low), float(high), p)


def paired_ratio(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """``mean(a) / mean(b)`` over the same users, with its paired percentile-bootstrap interval.

    Both means are taken over the same resampled users (same positions, the pairing); users where either
    side is NaN are dropped. Resamples with ``mean(b) = 0`` give ``inf`` (or NaN for 0/0) and sort last.
    Used for "model A is 1.5x model B" claims.

    Example:
        >>> import numpy as np
        >>> b = np.linspace(0.1, 1.0, 100)
        >>> r = paired_ratio(1.5 * b, b)
        >>> round(r.mean, 6), round(r.low, 6), round(r.high, 6)
        (1.5, 1.5, 1.5)
    """
    _check(n_boot, alpha)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must be 1-D per-user values of the same users")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2 or b.mean() == 0:
        return Interval(float(a.mean() / b.mean()) if len(a) and b.mean() else math.nan, math.nan, math.nan)
    ma, mb = _boot_means(a, int(n_boot), seed), _boot_means(b, int(n_boot), seed)  # same seed: same users
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mb > 0, ma / np.where(mb > 0, mb, 1.0), np.inf)
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return Interval(float(a.mean() / b.mean()), float(low), float(high))
