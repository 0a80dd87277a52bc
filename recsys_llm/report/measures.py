"""Ranked lists -> per-user metrics and their means, at every cut-off.

`per_user_metrics` applies the `recsys_llm.metrics` functions to every user with at least one held-out item
(aligned arrays, ready for bootstrap intervals and paired tests); `evaluate_ranked` averages them;
`metric_curve` gives a metric at every K (the data of a Recall@K plot). `recsys_llm.report.tables` writes
them as ``report.json`` / ``report.md``.

Example:
    >>> evaluate_ranked(np.array([[3, 1]]), [np.array([1])], ks=[2])["Recall@2"]
    1.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from recsys_llm.metrics import (
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

__all__ = ["DEFAULT_KS", "METRICS", "evaluate_ranked", "metric_curve", "metric_names", "per_user_metrics"]

logger = logging.getLogger(__name__)

DEFAULT_KS: list[int] = [10, 50]

_METRIC_FNS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "Recall": recall_at_k,
    "NDCG": ndcg_at_k,
    "MRR": mrr_at_k,
    "HitRate": hit_rate_at_k,
    "Precision": precision_at_k,
    "MAP": map_at_k,
}
_EVERY_K = ("Recall", "NDCG")  # reported at every cut-off
_SMALLEST_K = ("MRR", "HitRate", "Precision", "MAP")  # reported at the smallest cut-off only


def metric_names(ks: Sequence[int]) -> list[str]:
    """Metric names `evaluate_ranked` produces, in order: Recall@k, NDCG@k at every k (ascending), with
    MRR@k and HitRate@k after those of the smallest k.

    Example:
        >>> metric_names([50, 10])
        ['Recall@10', 'NDCG@10', 'MRR@10', 'HitRate@10', 'Precision@10', 'MAP@10', 'Recall@50', 'NDCG@50']
    """
    ks = _check_ks(ks)
    names = []
    for k in ks:
        names += [f"{m}@{k}" for m in _EVERY_K]
        if k == ks[0]:
            names += [f"{m}@{k}" for m in _SMALLEST_K]
    return names


def _check_ks(ks: Sequence[int]) -> list[int]:
    if len(ks) == 0 or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1; got {list(ks)!r}")
    return sorted({int(k) for k in ks})


METRICS: list[str] = metric_names(DEFAULT_KS)
"""Metric names for the default cut-offs ``[10, 50]``; `metric_names` gives them for other ``ks``."""


def evaluate_ranked(ranked: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    """Mean of every metric in ``metric_names(ks)`` over users with >= 1 target, plus ``"users"``.

    ``value = (1 / |U|) * sum_{u in U} metric_u`` with ``U = {u : |targets[u]| > 0}``; users without targets
    are dropped (their per-user metrics are NaN), and ``"users" = |U|``.

    Args:
        ranked: ``(n_users, K)`` item ids best first, ``-1`` padding; ``K >= max(ks)``.
        targets: ``n_users`` arrays of held-out item ids.
        ks: cut-offs.

    Returns:
        ``{"Recall@10": ..., ..., "users": n}`` in `metric_names` order; NaN metrics if ``n == 0``.

    Raises:
        ValueError: ``K < max(ks)`` or bad shapes (see `recsys_llm.metrics.hit_matrix`).

    Example:
        >>> evaluate_ranked(np.array([[3, 1], [2, 0]]), [np.array([1]), np.array([])], ks=[2])
        {'Recall@2': 1.0, 'NDCG@2': 0.6309..., 'MRR@2': 0.5, 'HitRate@2': 1.0, 'Precision@2': 0.5, 'MAP@2': 0.5, 'users': 1}
    """
    per_user = per_user_metrics(ranked, targets, ks)
    n_eval = len(next(iter(per_user.values())))
    if n_eval < len(targets):
        logger.info(
            "evaluating %d of %d users (%d have no held-out items)", n_eval, len(targets), len(targets) - n_eval
        )
    if n_eval == 0:
        logger.warning("no user has a held-out item; every metric is NaN")
    out: dict[str, float] = {name: float(v.mean()) if n_eval else math.nan for name, v in per_user.items()}
    out["users"] = n_eval
    return out


def per_user_metrics(ranked: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Every metric of ``metric_names(ks)`` per user, for the users with >= 1 target (in input order).

    The arrays are aligned across metrics (and across models evaluated on the same users and targets), so
    they feed bootstrap intervals and paired comparisons directly.
    """
    kss = _check_ks(ks)
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K); got shape {ranked.shape}")
    if ranked.shape[1] < kss[-1]:
        raise ValueError(
            f"ranked lists have {ranked.shape[1]} columns but max(ks) = {kss[-1]}; retrieve at least "
            f"{kss[-1]} items per user (pad with -1)"
        )
    hits, n_rel = hit_matrix(ranked, targets)
    keep = n_rel > 0
    hits, n_rel = hits[keep], n_rel[keep]
    out = {}
    for name in metric_names(kss):
        metric, k = name.split("@")
        out[name] = _METRIC_FNS[metric](hits, n_rel, int(k))
    return out


def metric_curve(ranked: np.ndarray, targets: Sequence[np.ndarray], metric: str, ks: Sequence[int]) -> list[float]:
    """Mean ``metric`` (``Recall``, ``NDCG``, ...) at every cut-off in ``ks``: the data of a Recall@K plot."""
    hits, n_rel = hit_matrix(np.asarray(ranked)[:, : max(ks)], targets)
    keep = n_rel > 0
    if not keep.any():
        return [math.nan] * len(ks)
    return [float(_METRIC_FNS[metric](hits[keep], n_rel[keep], int(k)).mean()) for k in ks]
