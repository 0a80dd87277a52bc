"""Full ranking over the catalog, and the one top-k scorer every validation uses.

:func:`rank_items` is the one place that turns item scores into top-k lists: full ranking over the catalog
(or an explicit candidate set, e.g. the cold items), each user's seen items excluded, ties broken by the lower
item id so that results are deterministic. :func:`topk_metrics` reads Recall/NDCG/... at k off such lists;
:func:`full_ranking_metrics` chains the two ("score every item, mask what the user has seen, take the top k,
measure against the held-out items"), and :func:`embedding_ranking_metrics` does it for user and item
embeddings a chunk of users at a time. Fine-tuning, reranker, user-pooling and hybrid validation all go
through them.

Example:
    >>> pop = popularity_scores(train, n_items)                       # doctest: +SKIP
    >>> scores, ids = rank_items(pop, 10, seen=seen, users=users)     # doctest: +SKIP
    >>> full_ranking_metrics(np.array([[0.9, 0.1, 0.5]]), [np.array([2])], k=2, seen=[np.array([0])])
    {'recall@2': array([1.]), 'ndcg@2': array([1.])}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys_llm.metrics import AT_K, hit_matrix

__all__ = [
    "embedding_ranking_metrics",
    "full_ranking_metrics",
    "mean_metrics",
    "popularity_scores",
    "rank_items",
    "topk_metrics",
]

logger = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 22  # cells of a (rows, items) working block: ~16 MB of float32
VALIDATION_METRICS = ("recall", "ndcg")
"""What the validation scorers measure unless told otherwise (names of :data:`recsys_llm.metrics.AT_K`)."""


def popularity_scores(train: pd.DataFrame, n_items: int) -> np.ndarray:
    """True interaction counts per item: ``score[i] = |{rows of train with item == i}|``.

    Every interaction counts (repeats too), unlike RecBole's "Pop", which counts batches.

    Args:
        train: canonical interactions frame with an int ``item`` column (ids in ``0..n_items-1``).
        n_items: catalog size; items never seen in ``train`` score 0.

    Returns:
        float32 ``(n_items,)``.

    Raises:
        ValueError: no ``item`` column, or an item id outside ``0..n_items-1``.

    Example:
        >>> popularity_scores(pd.DataFrame({"user": [0, 1, 1], "item": [2, 2, 0]}), 4)
        array([1., 0., 2., 0.], dtype=float32)
    """
    if "item" not in train.columns:
        raise ValueError(f"train needs an 'item' column; got columns {list(train.columns)}")
    items = train["item"].to_numpy(dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(
            f"train item ids span {items.min()}..{items.max()}, outside the catalog 0..{n_items - 1}"
        )
    return np.bincount(items, minlength=n_items).astype(np.float32)


def rank_items(
    scores: np.ndarray,
    k: int,
    seen: Sequence[np.ndarray] | None = None,
    candidates: np.ndarray | None = None,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per row by score: full ranking, seen items excluded, ties to the lower item id.

    Row ``i`` ranks the eligible items ``E_i = C \\ seen[i]`` (``C`` = ``candidates`` or the whole catalog)
    by ``(-score, item id)`` and keeps the first k. Rows with ``|E_i| < k`` are padded with id ``-1`` and
    score ``-inf``.

    Shared scores (one vector for every row) are ordered once; each row then walks that order skipping its
    seen items, so no ``(n_rows, n_items)`` array is built. Per-user scores are processed in row chunks with
    ``argpartition`` (selection, not a full sort).

    Args:
        scores: ``(n_items,)`` shared by all rows, or ``(n_rows, n_items)`` per row; finite values.
        k: list length, ``>= 1``.
        seen: ``n_rows`` arrays of item ids to exclude (ids outside ``candidates`` are ignored).
        candidates: int item ids to rank among (e.g. the cold items); default the whole catalog.
        users: the user ids of the rows; only its length is used, to size the output for shared scores
            (``seen`` gives it too). For per-row scores it must have ``n_rows`` entries if given.

    Returns:
        ``(scores, ids)``: float32 ``(n_rows, k)`` and int64 ``(n_rows, k)``, best first.

    Raises:
        ValueError: bad shapes, non-finite scores, ids outside the catalog, or mismatched row counts.

    Example:
        >>> rank_items(np.array([1.0, 3.0, 3.0, 2.0]), 3, seen=[np.array([2]), np.array([])])[1]
        array([[1, 3, 0],
               [1, 2, 3]])
    """
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be (n_items,) or (n_rows, n_items); got shape {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    k = int(k)
    n_items = scores.shape[-1]

    if scores.ndim == 1:
        if users is not None:
            n_rows = len(users)
        elif seen is not None:
            n_rows = len(seen)
        else:
            raise ValueError("shared (n_items,) scores need `users` or `seen` to know how many rows to rank")
    else:
        n_rows = scores.shape[0]
        if users is not None and len(users) != n_rows:
            raise ValueError(f"{len(users)} users for {n_rows} score rows")
    if seen is not None and len(seen) != n_rows:
        raise ValueError(f"{len(seen)} seen arrays for {n_rows} rows")

    if candidates is None:
        cand = np.arange(n_items, dtype=np.int64)
    else:
        cand = np.unique(np.asarray(candidates, dtype=np.int64))
        if cand.size and (cand[0] < 0 or cand[-1] >= n_items):
            raise ValueError(
                f"candidate ids span {cand[0]}..{cand[-1]}, outside the catalog 0..{n_items - 1}"
            )
    col_of = np.full(n_items, -1, dtype=np.int64)  # item id -> column among the candidates, -1 if not one
    col_of[cand] = np.arange(cand.size)

    out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    out_ids = np.full((n_rows, k), -1, dtype=np.int64)
    if n_rows == 0 or cand.size == 0:
        return out_scores, out_ids

    rank = _rank_shared if scores.ndim == 1 else _rank_per_row
    rank(scores, cand, _SeenPairs.build(seen, col_of, n_items), out_scores, out_ids)
    return out_scores, out_ids


class _SeenPairs(NamedTuple):
    """The seen items as sorted-by-row (row, candidate column) pairs; non-candidates dropped."""

    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def build(cls, seen: Sequence[np.ndarray] | None, col_of: np.ndarray, n_items: int) -> _SeenPairs:
        if seen is None or len(seen) == 0:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64))
        lens = np.fromiter((np.size(s) for s in seen), dtype=np.int64, count=len(seen))
        flat = np.concatenate([np.asarray(s, dtype=np.int64).ravel() for s in seen])
        if flat.size and (flat.min() < 0 or flat.max() >= n_items):
            raise ValueError(
                f"seen item ids span {flat.min()}..{flat.max()}, outside the catalog 0..{n_items - 1}"
            )
        rows = np.repeat(np.arange(len(seen), dtype=np.int64), lens)
        cols = col_of[flat]
        keep = cols >= 0
        return cls(rows[keep], cols[keep])

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of the pairs of rows ``start..stop-1``, rows counted from ``start``."""
        lo, hi = int(np.searchsorted(self.rows, start, "left")), int(np.searchsorted(self.rows, stop, "left"))
        return self.rows[lo:hi] - start, self.cols[lo:hi]


def _check_finite(block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise ValueError(
            "scores must be finite (found NaN or inf); exclusions go through `seen`/`candidates`"
        )


def _work_dtype(scores: np.ndarray) -> np.dtype:
    """Rank in the scores' own float precision (ints as float64); only the output is float32."""
    return scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.dtype(np.float64)


def _rank_shared(scores: np.ndarray, cand: np.ndarray, seen: _SeenPairs, out_scores: np.ndarray,
                 out_ids: np.ndarray) -> None:
    """One global order by (-score, id); each row takes its first k unseen entries of that order."""
    sub = scores[cand].astype(_work_dtype(scores), copy=False)
    _check_finite(sub)
    order = np.lexsort((cand, -sub))  # candidate columns, best first; ties -> lower id (cand is sorted)
    pos_of = np.empty(cand.size, dtype=np.int64)  # candidate column -> position in `order`
    pos_of[order] = np.arange(cand.size)
    ordered_ids, ordered_scores = cand[order], sub[order]

    n_rows, k = out_ids.shape
    seen_count = np.bincount(seen.rows, minlength=n_rows)
    chunk = max(1, _CHUNK_ELEMENTS // (k + int(seen_count.max(initial=0))))
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        depth = min(cand.size, k + int(seen_count[start:stop].max(initial=0)))  # enough to find k unseen
        blocked = np.zeros((stop - start, depth), dtype=bool)  # (rows, depth): seen at that position
        rows, cols = seen.block(start, stop)
        pos = pos_of[cols]
        inside = pos < depth
        blocked[rows[inside], pos[inside]] = True
        free = ~blocked
        rank = np.cumsum(free, axis=1) - 1  # 0-based rank among the unseen entries
        take = free & (rank < k)
        r, p = np.nonzero(take)
        out_ids[start + r, rank[r, p]] = ordered_ids[p]
        out_scores[start + r, rank[r, p]] = ordered_scores[p]


def _rank_per_row(scores: np.ndarray, cand: np.ndarray, seen: _SeenPairs, out_scores: np.ndarray,
                  out_ids: np.ndarray) -> None:
    """Row chunks: seen -> -inf, argpartition for the k-th best value, ties at it filled by lower id."""
    n_rows, k = out_ids.shape
    m = cand.size
    kk = min(k, m)
    full = m == scores.shape[1]  # candidates are the whole catalog: no column gather needed
    chunk = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        block = scores[start:stop] if full else scores[start:stop][:, cand]
        block = np.array(block, dtype=_work_dtype(scores))  # (rows, m), own copy
        _check_finite(block)
        block[seen.block(start, stop)] = -np.inf

        kth = np.argpartition(block, m - kk, axis=1)[:, m - kk : m - kk + 1]  # (rows, 1)
        thresh = np.take_along_axis(block, kth, axis=1)  # kk-th best value per row
        above = block > thresh
        tied = block == thresh
        need = kk - above.sum(axis=1, keepdims=True)  # how many tied items to take, lowest columns first
        take = above | (tied & (np.cumsum(tied, axis=1) <= need))  # exactly kk per row
        cols = np.nonzero(take)[1].reshape(stop - start, kk)  # ascending column = ascending item id
        vals = np.take_along_axis(block, cols, axis=1)
        best = np.argsort(-vals, axis=1, kind="stable")  # stable keeps lower id first among ties
        cols = np.take_along_axis(cols, best, axis=1)
        vals = np.take_along_axis(vals, best, axis=1)
        ids = cand[cols]
        ids[np.isneginf(vals)] = -1  # excluded (seen) items only fill when too few are eligible
        out_ids[start:stop, :kk] = ids
        out_scores[start:stop, :kk] = vals


# ------------------------------------------------------------------------------------- validation scoring
def topk_metrics(ranked: np.ndarray, targets: Sequence[np.ndarray], k: int,
                 metrics: Sequence[str] = VALIDATION_METRICS) -> dict[str, np.ndarray]:
    """Per-user ``metric@k`` of ranked id lists against held-out items.

    Each row keeps its first ``k`` ids; rows with fewer than ``k`` columns are padded with ``-1`` (a short
    list misses the rest). The formulas are those of :mod:`recsys_llm.metrics`.

    Args:
        ranked: ``(n_users, K)`` int item ids, best first, ``-1`` padding.
        targets: ``n_users`` arrays of held-out item ids.
        k: cut-off, ``>= 1``.
        metrics: names of :data:`recsys_llm.metrics.AT_K` (``recall``, ``ndcg``, ``mrr``, ...).

    Returns:
        ``{"recall@k": float64 (n_users,), ...}`` in the order of ``metrics``; NaN for users without targets.

    Example:
        >>> # hit at rank 2 of 3, two targets: recall 1/2, NDCG (1/log2(3)) / (1 + 1/log2(3)) = 0.3869
        >>> m = topk_metrics(np.array([[4, 7]]), [np.array([7, 9])], k=3)
        >>> m["recall@3"], m["ndcg@3"].round(4)
        (array([0.5]), array([0.3869]))
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    unknown = [m for m in metrics if m not in AT_K]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(AT_K)}")
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K); got shape {ranked.shape}")
    ranked = ranked[:, :k]
    if ranked.shape[1] < k:  # fewer ranked items than k: the rest are misses
        ranked = np.pad(ranked, ((0, 0), (0, k - ranked.shape[1])), constant_values=-1)
    hits, n_rel = hit_matrix(ranked, targets)
    return {f"{m}@{k}": AT_K[m](hits, n_rel, k) for m in metrics}


def full_ranking_metrics(scores: np.ndarray, targets: Sequence[np.ndarray], k: int, *,
                         seen: Sequence[np.ndarray] | None = None, candidates: np.ndarray | None = None,
                         metrics: Sequence[str] = VALIDATION_METRICS) -> dict[str, np.ndarray]:
    """Rank every score row (:func:`rank_items`: seen items masked), keep the top k, measure it.

    Args:
        scores: ``(n_users, n_items)`` (or ``(n_items,)`` shared, then ``seen`` sizes the rows).
        targets: ``n_users`` arrays of held-out item ids.
        k: cut-off.
        seen: ``n_users`` arrays of item ids never recommended to that user (the training history).
        candidates: rank among these item ids only (default the whole catalog).
        metrics: as :func:`topk_metrics`.

    Returns:
        As :func:`topk_metrics`.

    Example:
        >>> scores = np.array([[0.9, 0.1, 0.5, 0.7],     # user 0 has seen item 0: ranks 3, 2 -> target 2 2nd
        ...                    [0.2, 0.8, 0.4, 0.6]])    # user 1: ranks 1, 3 -> target 3 2nd, 1 1st
        >>> m = full_ranking_metrics(scores, [np.array([2]), np.array([1, 3])], k=2, seen=[np.array([0]), []])
        >>> m["recall@2"], m["ndcg@2"].round(4)
        (array([1., 1.]), array([0.6309, 1.    ]))
    """
    _, ranked = rank_items(scores, k, seen=seen, candidates=candidates)
    return topk_metrics(ranked, targets, k, metrics)


def embedding_ranking_metrics(user_emb: np.ndarray, item_emb: np.ndarray, targets: Sequence[np.ndarray],
                              k: int, *, seen: Sequence[np.ndarray] | None = None,
                              candidates: np.ndarray | None = None,
                              metrics: Sequence[str] = VALIDATION_METRICS,
                              user_chunk: int = 1024) -> dict[str, np.ndarray]:
    """:func:`full_ranking_metrics` of the inner-product scores ``user_emb @ item_emb.T``.

    Scores are built ``user_chunk`` users at a time, so no ``(n_users, n_items)`` matrix is held at once.

    Args:
        user_emb: ``(n_users, dim)``; item_emb: ``(n_items, dim)``; the rest as :func:`full_ranking_metrics`.

    Returns:
        As :func:`topk_metrics`.
    """
    if len(targets) != len(user_emb) or (seen is not None and len(seen) != len(user_emb)):
        raise ValueError(f"{len(user_emb)} users, {len(targets)} target arrays and "
                         f"{'-' if seen is None else len(seen)} seen arrays; need one of each per user")
    parts = []
    for lo in range(0, len(user_emb), user_chunk):
        rows = slice(lo, lo + user_chunk)
        scores = user_emb[rows] @ item_emb.T  # (chunk, n_items)
        parts.append(full_ranking_metrics(scores, targets[rows], k, candidates=candidates, metrics=metrics,
                                          seen=None if seen is None else seen[rows]))
    return {f"{m}@{k}": np.concatenate([p[f"{m}@{k}"] for p in parts]) if parts else np.empty(0)
            for m in metrics}


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean of each per-user metric over the users that have targets (NaN entries skipped)."""
    return {name: float(np.nanmean(values)) for name, values in per_user.items()}
