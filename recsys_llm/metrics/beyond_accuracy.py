"""Beyond-accuracy metrics as pure numpy functions on the ranked id matrix.

They take the ranked ids themselves (``(n_users, K)``, best first, ``-1`` padding), not a hit matrix, and
ignore the padding. Per-user ones return ``NaN`` for rows with too few items.

Example:
    >>> ranked = np.array([[0, 1], [1, -1]])
    >>> catalog_coverage(ranked, n_items=4, k=2), gini_exposure(ranked, n_items=2, k=2)
    (0.5, 0.16666666666666666)
"""

from __future__ import annotations

import numpy as np

from recsys_llm.metrics._checks import cutoff, ranked_ids

__all__ = [
    "average_recommendation_popularity",
    "catalog_coverage",
    "gini_exposure",
    "intra_list_diversity",
    "novelty",
]


def _ranked_top(ranked: np.ndarray, k: int, n_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate; return ``(ranked[:, :k] as int64, valid mask = ids >= 0)``. Checks ids < n_items if given."""
    ranked = ranked_ids(ranked)
    top = ranked[:, : cutoff(k, ranked.shape[1])]
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
