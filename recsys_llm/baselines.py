"""Most-popular baseline and the shared full-ranking helper (`rank_items`).

`rank_items` is the one place that turns item scores into top-k lists for evaluation: full ranking over the
catalog (or an explicit candidate set, e.g. the cold items), each user's seen items excluded, ties broken by
the lower item id so that results are deterministic.

Example:
    >>> pop = popularity_scores(train, n_items)                       # (n_items,) float32 counts
    >>> scores, ids = rank_items(pop, 10, seen=seen, users=users)     # (len(users), 10) each
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["popularity_scores", "rank_items"]

logger = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 22  # cells of a (rows, items) working block: ~16 MB of float32


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

    seen_rows, seen_cols = _seen_pairs(seen, col_of, n_items)
    if scores.ndim == 1:
        _rank_shared(scores, cand, seen_rows, seen_cols, out_scores, out_ids)
    else:
        _rank_per_row(scores, cand, seen_rows, seen_cols, out_scores, out_ids)
    return out_scores, out_ids


def _seen_pairs(
    seen: Sequence[np.ndarray] | None, col_of: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``seen`` into sorted-by-row (row, candidate column) pairs, dropping non-candidates."""
    if seen is None or len(seen) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lens = np.fromiter((np.size(s) for s in seen), dtype=np.int64, count=len(seen))
    flat = np.concatenate([np.asarray(s, dtype=np.int64).ravel() for s in seen])
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(
            f"seen item ids span {flat.min()}..{flat.max()}, outside the catalog 0..{n_items - 1}"
        )
    rows = np.repeat(np.arange(len(seen), dtype=np.int64), lens)
    cols = col_of[flat]
    keep = cols >= 0
    return rows[keep], cols[keep]


def _check_finite(block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise ValueError(
            "scores must be finite (found NaN or inf); exclusions go through `seen`/`candidates`"
        )


def _work_dtype(scores: np.ndarray) -> np.dtype:
    """Rank in the scores' own float precision (ints as float64); only the output is float32."""
    return scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.dtype(np.float64)


def _row_bounds(rows: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Slice of the (row-sorted) seen pairs that belongs to rows ``start..stop-1``."""
    return int(np.searchsorted(rows, start, "left")), int(np.searchsorted(rows, stop, "left"))


def _rank_shared(
    scores: np.ndarray,
    cand: np.ndarray,
    seen_rows: np.ndarray,
    seen_cols: np.ndarray,
    out_scores: np.ndarray,
    out_ids: np.ndarray,
) -> None:
    """One global order by (-score, id); each row takes its first k unseen entries of that order."""
    sub = scores[cand].astype(_work_dtype(scores), copy=False)
    _check_finite(sub)
    order = np.lexsort((cand, -sub))  # candidate columns, best first; ties -> lower id (cand is sorted)
    pos_of = np.empty(cand.size, dtype=np.int64)  # candidate column -> position in `order`
    pos_of[order] = np.arange(cand.size)
    ordered_ids, ordered_scores = cand[order], sub[order]

    n_rows, k = out_ids.shape
    seen_count = np.bincount(seen_rows, minlength=n_rows)
    chunk = max(1, _CHUNK_ELEMENTS // (k + int(seen_count.max(initial=0))))
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        depth = min(cand.size, k + int(seen_count[start:stop].max(initial=0)))  # enough to find k unseen
        blocked = np.zeros((stop - start, depth), dtype=bool)  # (rows, depth): seen at that position
        lo, hi = _row_bounds(seen_rows, start, stop)
        pos = pos_of[seen_cols[lo:hi]]
        inside = pos < depth
        blocked[seen_rows[lo:hi][inside] - start, pos[inside]] = True
        free = ~blocked
        rank = np.cumsum(free, axis=1) - 1  # 0-based rank among the unseen entries
        take = free & (rank < k)
        r, p = np.nonzero(take)
        out_ids[start + r, rank[r, p]] = ordered_ids[p]
        out_scores[start + r, rank[r, p]] = ordered_scores[p]


def _rank_per_row(
    scores: np.ndarray,
    cand: np.ndarray,
    seen_rows: np.ndarray,
    seen_cols: np.ndarray,
    out_scores: np.ndarray,
    out_ids: np.ndarray,
) -> None:
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
        lo, hi = _row_bounds(seen_rows, start, stop)
        block[seen_rows[lo:hi] - start, seen_cols[lo:hi]] = -np.inf

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
