"""Ranking metrics as pure numpy functions on a hit matrix.

The accuracy metrics take ``hits`` (bool, ``(n_users, K)``, column ``r-1`` = "the item at rank r is held out"),
``n_rel`` (int64, ``(n_users,)``, number of distinct held-out items) and a cut-off ``k <= K``, and returns a
float64 array with one value per user. Users with ``n_rel == 0`` get ``NaN`` for every metric: they have
nothing to find, so the caller drops them before averaging (`recsys_llm.evaluate.evaluate_ranked` does).

Build the hit matrix once with `hit_matrix`, then read every metric off it:

Example:
    >>> ranked = np.array([[5, 3, 9, -1]])          # best first, -1 = padding
    >>> hits, n_rel = hit_matrix(ranked, [np.array([3, 7])])
    >>> recall_at_k(hits, n_rel, 2), mrr_at_k(hits, n_rel, 4)
    (array([0.5]), array([0.5]))

The beyond-accuracy metrics (`catalog_coverage`, `intra_list_diversity`, `novelty`,
`average_recommendation_popularity`, `gini_exposure`) take the ranked id matrix itself (``(n_users, K)``,
best first, ``-1`` padding) and ignore the padding. Per-user ones return ``NaN`` for rows with too few items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
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
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K); got shape {ranked.shape}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must hold integer item ids; got dtype {ranked.dtype}")
    ranked = ranked.astype(np.int64, copy=False)
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k > hits.shape[1]:
        raise ValueError(
            f"k={k} but the rankings have only {hits.shape[1]} columns; rank at least k items per user "
            "(pad short rows with -1)"
        )
    return hits[:, :k], n_rel


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


# ---------------------------------------------------------------------------------------------------------
# Beyond-accuracy metrics: computed from the ranked ids, not from hits.
# ---------------------------------------------------------------------------------------------------------


def _ranked_top(ranked: np.ndarray, k: int, n_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate; return ``(ranked[:, :k] as int64, valid mask = ids >= 0)``. Checks ids < n_items if given."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K); got shape {ranked.shape}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must hold integer item ids; got dtype {ranked.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k > ranked.shape[1]:
        raise ValueError(
            f"k={k} but the rankings have only {ranked.shape[1]} columns; rank at least k items per user "
            "(pad short rows with -1)"
        )
    top = ranked[:, :k].astype(np.int64, copy=False)
    if n_items is not None and top.size and int(top.max()) >= n_items:
        raise ValueError(f"ranked holds item id {int(top.max())} but there are only {n_items} items")
    return top, top >= 0


def _check_n_items(n_items: int) -> int:
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be an integer >= 1; got {n_items!r}")
    return int(n_items)


def _check_counts(item_counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(item_counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"item_counts must be 1-D (n_items,); got shape {counts.shape}")
    if counts.size and counts.min() < 0:
        raise ValueError("item_counts must be >= 0")
    return counts


def _gather(table: np.ndarray, top: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``table[top]`` with padding entries read as row 0 (masked by the caller); safe for an empty table."""
    if table.shape[0] == 0:  # then every entry is padding (_ranked_top checked ids < 0 = size)
        return np.zeros(top.shape + table.shape[1:], dtype=table.dtype)
    return table[np.where(valid, top, 0)]


def _mean_over_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row mean of ``values`` over ``valid`` entries; NaN for rows with none."""
    n = valid.sum(axis=1)
    total = np.where(valid, values, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float64)


def _exposure(top: np.ndarray, valid: np.ndarray, n_items: int) -> np.ndarray:
    return np.bincount(top[valid], minlength=n_items)


def catalog_coverage(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Catalog coverage@k = |distinct item ids in all users' top k| / n_items.

    Args:
        ranked: ``(n_users, K)`` integer item ids, best first, ``-1`` padding (ignored).
        n_items: catalog size; ids must be ``< n_items`` (ValueError otherwise).
        k: cut-off, ``1 <= k <= K``.

    Returns:
        float in ``[0, 1]``.

    Example:
        >>> catalog_coverage(np.array([[0, 1], [1, -1]]), n_items=4, k=2)   # {0, 1} / 4
        0.5
    """
    n_items = _check_n_items(n_items)
    top, valid = _ranked_top(ranked, k, n_items)
    return float(np.unique(top[valid]).size / n_items)


def gini_exposure(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Gini coefficient of item exposure in all users' top k (0 = every item shown equally often, -> 1 =
    exposure concentrated on few items).

    x_i = number of users whose top k contains item i (every catalog item, also those never shown, counts);
    with x sorted ascending and i = 1..n (n = n_items):  G = sum_i (2i - n - 1) x_i / (n * sum_i x_i);
    G = 0 when sum x = 0. One item shown to everyone and nothing else gives the maximum (n - 1) / n.

    Args / Returns: as `catalog_coverage`.

    Example:
        >>> gini_exposure(np.array([[0], [0]]), n_items=2, k=1)   # x = [0, 2]: (1*0 + 1*2) / (2*2)
        0.5
    """
    n_items = _check_n_items(n_items)
    top, valid = _ranked_top(ranked, k, n_items)
    x = np.sort(_exposure(top, valid, n_items)).astype(np.float64)
    total = x.sum()
    if total == 0:
        return 0.0
    i = np.arange(1, n_items + 1, dtype=np.float64)
    return float(((2 * i - n_items - 1) * x).sum() / (n_items * total))


def intra_list_diversity(
    ranked: np.ndarray, item_emb: np.ndarray, k: int, *, max_chunk_bytes: int = 64 * 2**20
) -> np.ndarray:
    """Intra-list diversity@k = 1 - mean pairwise cosine similarity of the top-k items' embeddings.

    ILD_u = 1 - (1 / (m (m - 1))) * sum_{i != j} cos(e_i, e_j) over the m non-padding items of the user's
    top k; NaN where m < 2. In ``[0, 2]`` (0 = identical directions). A zero-norm embedding has cosine 0 with
    everything. Vectorised with ``einsum`` over chunks of users, using the identity
    sum_{i != j} <v_i, v_j> = |sum_i v_i|^2 - sum_i |v_i|^2 on unit vectors (O(k d) per user, no k x k
    matrix); each chunk's gathered ``(users, k, d)`` embeddings take about ``max_chunk_bytes``.

    Args:
        ranked: ``(n_users, K)`` integer item ids, best first, ``-1`` padding (ignored).
        item_emb: ``(n_items, d)`` float embeddings, row = item id (ids must be ``< n_items``).
        k: cut-off, ``1 <= k <= K``.
        max_chunk_bytes: memory bound for one chunk of users (at least one user per chunk).

    Returns:
        float64 ``(n_users,)``.

    Example:
        >>> emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> intra_list_diversity(np.array([[0, 1], [0, -1]]), emb, 2)   # cos = 0 -> 1; one item -> NaN
        array([ 1., nan])
    """
    emb = np.asarray(item_emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"item_emb must be 2-D (n_items, d); got shape {emb.shape}")
    top, valid = _ranked_top(ranked, k, emb.shape[0])
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms > 0, norms, 1.0)
    n_users, d = top.shape[0], emb.shape[1]
    m = valid.sum(axis=1)
    pair_sum = np.zeros(n_users, dtype=np.float64)
    chunk = max(1, int(max_chunk_bytes) // (8 * k * max(d, 1)))
    for start in range(0, n_users, chunk):
        sl = slice(start, start + chunk)
        vecs = _gather(unit, top[sl], valid[sl]) * valid[sl, :, None]  # (c, k, d); pads -> zero vectors
        total = vecs.sum(axis=1)  # (c, d)
        # ordered pairs i != j: |sum v|^2 - sum |v|^2 (exact also for zero-norm rows, whose |v|^2 is 0)
        pair_sum[sl] = np.einsum("ud,ud->u", total, total) - np.einsum("uid,uid->u", vecs, vecs)
    with np.errstate(divide="ignore", invalid="ignore"):
        ild = np.clip(1.0 - pair_sum / np.maximum(m * (m - 1), 1), 0.0, 2.0)  # clip float round-off
    return np.where(m >= 2, ild, np.nan).astype(np.float64)


def novelty(ranked: np.ndarray, item_counts: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Novelty@k = mean self-information of the top-k items:  (1/m) * sum_i -log2(p_i),  p_i = c_i / n_users.

    ``c_i = max(item_counts[i], 1)``: counts are clipped at 1 so items never seen in training get the finite
    maximum ``log2(n_users)`` rather than infinity. With per-user counts (users who interacted with the item)
    ``p_i <= 1`` and novelty ``>= 0``; with raw interaction counts (repeats included) an item can exceed
    ``n_users`` and contribute a negative term. m = non-padding items in the top k; NaN where m = 0.

    Args:
        ranked: ``(n_users, K)`` integer item ids, best first, ``-1`` padding (ignored).
        item_counts: ``(n_items,)`` non-negative popularity counts, indexed by item id.
        n_users: number of users the counts come from (the denominator of p_i), ``>= 1``.
        k: cut-off, ``1 <= k <= K``.

    Returns:
        float64 ``(ranked.shape[0],)``.

    Example:
        >>> novelty(np.array([[0, 1]]), np.array([4, 1]), n_users=4, k=2)   # (-log2(1) - log2(1/4)) / 2
        array([1.])
    """
    if isinstance(n_users, bool) or not isinstance(n_users, (int, np.integer)) or n_users < 1:
        raise ValueError(f"n_users must be an integer >= 1; got {n_users!r}")
    counts = _check_counts(item_counts)
    top, valid = _ranked_top(ranked, k, counts.size)
    info = -np.log2(np.maximum(counts, 1.0) / n_users)
    return _mean_over_valid(_gather(info, top, valid), valid)


def average_recommendation_popularity(ranked: np.ndarray, item_counts: np.ndarray, k: int) -> np.ndarray:
    """ARP@k (Abdollahpouri et al.) = mean popularity count of the top-k items:  (1/m) * sum_i c_i.

    m = non-padding items in the top k; NaN where m = 0. Lower = less popularity-biased lists.

    Args:
        ranked: ``(n_users, K)`` integer item ids, best first, ``-1`` padding (ignored).
        item_counts: ``(n_items,)`` non-negative popularity counts (e.g. training interactions per item).
        k: cut-off, ``1 <= k <= K``.

    Returns:
        float64 ``(ranked.shape[0],)``.

    Example:
        >>> average_recommendation_popularity(np.array([[0, 1, -1]]), np.array([10, 2]), 3)   # (10 + 2) / 2
        array([6.])
    """
    counts = _check_counts(item_counts)
    top, valid = _ranked_top(ranked, k, counts.size)
    return _mean_over_valid(_gather(counts, top, valid), valid)
