"""Ranking metrics as pure numpy functions: the accuracy metrics here, the beyond-accuracy ones re-exported.

The accuracy metrics take ``hits`` (bool, ``(n_users, K)``, column ``r-1`` = "the item at rank r is held
out"), ``n_rel`` (int64, ``(n_users,)``, number of distinct held-out items) and a cut-off ``k <= K``, and
return a float64 array with one value per user. Users with ``n_rel == 0`` get ``NaN`` for every metric: they
have nothing to find, so the caller drops them before averaging (`recsys_llm.report.measures.evaluate_ranked`
does; :func:`recsys_llm.ranking.mean_metrics` skips them).

Build the hit matrix once with `hit_matrix`, then read every metric off it:

Example:
    >>> ranked = np.array([[5, 3, 9, -1]])          # best first, -1 = padding
    >>> hits, n_rel = hit_matrix(ranked, [np.array([3, 7])])
    >>> recall_at_k(hits, n_rel, 2), mrr_at_k(hits, n_rel, 4)
    (array([0.5]), array([0.5]))

The beyond-accuracy metrics (coverage, Gini of exposure, intra-list diversity, novelty, average
recommendation popularity) read the ranked ids instead: :mod:`recsys_llm.metrics.beyond_accuracy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys_llm.metrics._checks import cutoff, ranked_ids
from recsys_llm.metrics.beyond_accuracy import (
    average_recommendation_popularity,
    catalog_coverage,
    gini_exposure,
    intra_list_diversity,
    novelty,
)

__all__ = [
    "AT_K",
    "average_recommendation_popularity",
    "catalog_coverage",
    "gini_exposure",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
]


def hit_matrix(ranked: np.ndarray, targets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mark which ranked items are held-out targets.

    ``hits[u, r] = ranked[u, r] >= 0 and ranked[u, r] in targets[u]``; ``n_rel[u] = |set(targets[u])|``.
    Negative ids (``-1`` padding) are never hits. Vectorised: each (user, item) pair becomes one int64 key
    ``u * M + item`` and the ranked keys are looked up in the sorted target keys (no loop over ranks).

    Args:
        ranked: ``(n_users, K)`` integer item ids, best first; ``-1`` pads rows with fewer than K items.
            An id may appear at most once per row (a repeat would count one target twice).
        targets: ``n_users`` arrays of held-out item ids (``>= 0``); duplicates count once.

    Returns:
        ``(hits, n_rel)``: bool ``(n_users, K)`` and int64 ``(n_users,)``.

    Raises:
        ValueError: wrong shape/dtype, ``len(targets) != n_users``, negative target ids, or a repeated id
            within a ranked row.

    Example:
        >>> hit_matrix(np.array([[4, 2, -1]]), [np.array([2, 8])])
        (array([[False,  True, False]]), array([2]))
    """
    ranked = ranked_ids(ranked)
    n_users, depth = ranked.shape
    if len(targets) != n_users:
        raise ValueError(f"{len(targets)} target arrays for {n_users} ranked rows; need one per row")

    if depth > 1:
        srt = np.sort(ranked, axis=1)
        repeated = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if repeated.any():
            row = int(np.flatnonzero(repeated.any(axis=1))[0])
            raise ValueError(f"ranked row {row} repeats an item id; each item may be ranked once")

    lens = np.fromiter((np.size(t) for t in targets), dtype=np.int64, count=n_users)
    flat = (
        np.concatenate([np.asarray(t, dtype=np.int64).ravel() for t in targets])
        if n_users
        else np.empty(0, np.int64)
    )
    if flat.size and flat.min() < 0:
        raise ValueError("target item ids must be >= 0 (-1 is padding, not an item)")

    top = max(int(flat.max()) if flat.size else 0, int(ranked.max()) if ranked.size else 0)
    m = np.int64(top + 1)
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lens)
    tkeys = np.unique(owner * m + flat)  # sorted, distinct (user, item) keys
    n_rel = np.bincount(tkeys // m, minlength=n_users).astype(np.int64)

    rkeys = np.arange(n_users, dtype=np.int64)[:, None] * m + ranked  # (n_users, K)
    if tkeys.size == 0:
        return np.zeros(ranked.shape, dtype=bool), n_rel
    pos = np.minimum(np.searchsorted(tkeys, rkeys), tkeys.size - 1)
    hits = (tkeys[pos] == rkeys) & (ranked >= 0)
    return hits, n_rel


def _top(hits: np.ndarray, n_rel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs; return ``(hits[:, :k] as bool, n_rel as int64)``."""
    hits = np.asarray(hits, dtype=bool)
    n_rel = np.asarray(n_rel, dtype=np.int64)
    if hits.ndim != 2:
        raise ValueError(f"hits must be 2-D (n_users, K); got shape {hits.shape}")
    if n_rel.shape != (hits.shape[0],):
        raise ValueError(f"n_rel shape {n_rel.shape} does not match hits rows {hits.shape[0]}")
    return hits[:, : cutoff(k, hits.shape[1])], n_rel


def _nan_where_empty(values: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return np.where(n_rel > 0, values, np.nan).astype(np.float64)


def recall_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Recall@k = |hits in top k| / n_rel  (NaN where n_rel == 0).

    With one held-out item per user (leave-one-out) Recall@k equals HitRate@k.

    Args:
        hits: bool ``(n_users, K)`` from `hit_matrix`.
        n_rel: int ``(n_users,)`` from `hit_matrix`.
        k: cut-off, ``1 <= k <= K`` (ValueError otherwise).

    Returns:
        float64 ``(n_users,)``.

    Example:
        >>> recall_at_k(np.array([[0, 1, 1]], bool), np.array([4]), 3)   # 2 / 4
        array([0.5])
    """
    top, n_rel = _top(hits, n_rel, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _nan_where_empty(top.sum(axis=1) / np.maximum(n_rel, 1), n_rel)


def precision_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Precision@k = |hits in top k| / k  (NaN where n_rel == 0).

    Args / Returns: as `recall_at_k`.

    Example:
        >>> precision_at_k(np.array([[0, 1, 1, 0]], bool), np.array([4]), 4)   # 2 / 4
        array([0.5])
    """
    top, n_rel = _top(hits, n_rel, k)
    return _nan_where_empty(top.sum(axis=1) / k, n_rel)


def hit_rate_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """HitRate@k = 1 if any of the top k is a hit, else 0  (NaN where n_rel == 0).

    Args / Returns: as `recall_at_k`.

    Example:
        >>> hit_rate_at_k(np.array([[0, 0, 1]], bool), np.array([1]), 2)
        array([0.])
    """
    top, n_rel = _top(hits, n_rel, k)
    return _nan_where_empty(np.any(top, axis=1).astype(np.float64), n_rel)


def ndcg_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k with binary relevance  (NaN where n_rel == 0).

    DCG@k = sum_{r=1..k} hit_r / log2(r + 1);  IDCG@k = sum_{r=1..min(n_rel, k)} 1 / log2(r + 1);
    NDCG@k = DCG@k / IDCG@k.

    Args / Returns: as `recall_at_k`.

    Example:
        >>> # hits at ranks 1 and 3, n_rel = 2: (1 + 1/2) / (1 + 1/log2(3)) = 1.5 / 1.6309 = 0.9197
        >>> ndcg_at_k(np.array([[1, 0, 1]], bool), np.array([2]), 3).round(4)
        array([0.9197])
    """
    top, n_rel = _top(hits, n_rel, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))  # (k,): 1/log2(r+1), r = 1..k
    dcg = top @ discount
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[j] = IDCG with j relevant items in top k
    idcg = ideal[np.clip(n_rel, 0, k)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _nan_where_empty(dcg / np.where(idcg > 0, idcg, 1.0), n_rel)


def mrr_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """MRR@k = 1 / rank of the first hit within the top k, 0 if none  (NaN where n_rel == 0).

    Args / Returns: as `recall_at_k`.

    Example:
        >>> mrr_at_k(np.array([[0, 0, 1, 1]], bool), np.array([2]), 4)   # first hit at rank 3
        array([0.33333333])
    """
    top, n_rel = _top(hits, n_rel, k)
    any_hit = top.any(axis=1)
    first = np.argmax(top, axis=1) + 1  # rank (1-based) of the first hit; meaningless where any_hit is False
    return _nan_where_empty(np.where(any_hit, 1.0 / first, 0.0), n_rel)


def map_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """AP@k (average precision at k; MAP@k is its mean over users)  (NaN where n_rel == 0).

    AP@k = (1 / n_rel) * sum_{r=1..k} P@r * hit_r,  with P@r = |hits in top r| / r.

    Normalised by the total number of relevant items ``n_rel`` (trec_eval's ``map_cut_k`` convention), not
    by ``min(n_rel, k)``: a user with more relevant items than ``k`` cannot reach 1 (at most ``k / n_rel``).

    Args / Returns: as `recall_at_k`.

    Example:
        >>> # hits at ranks 1 and 3, n_rel = 3: (1/1 + 2/3) / 3 = 0.5556
        >>> map_at_k(np.array([[1, 0, 1]], bool), np.array([3]), 3).round(4)
        array([0.5556])
    """
    top, n_rel = _top(hits, n_rel, k)
    prec = np.cumsum(top, axis=1) / np.arange(1, k + 1, dtype=np.float64)  # P@r, r = 1..k
    ap_sum = (prec * top).sum(axis=1)
    return _nan_where_empty(ap_sum / np.maximum(n_rel, 1), n_rel)


AT_K: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "recall": recall_at_k,
    "precision": precision_at_k,
    "hit_rate": hit_rate_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
    "map": map_at_k,
}
"""The metrics above by short name (``recall`` -> :func:`recall_at_k`, ...), for callers that pick by name."""
