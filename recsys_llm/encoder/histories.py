"""Interaction histories as arrays for the pooling user model: flattened, and packed most-recent-first.

Histories are int64 item-id arrays, oldest first (as the library stores them). :func:`flatten_histories`
concatenates them (checking every id); :func:`pack_rows` cuts rows out of the flat array into a
most-recent-first ``(n, L)`` id matrix with ``-1`` padding; :func:`pack_histories` does both for whole
histories.

Example:
    >>> ids, mask = pack_histories([np.array([7, 8, 9]), np.array([4])], max_items=2)
    >>> ids.tolist(), mask.tolist()
    ([[9, 8], [4, -1]], [[True, True], [True, False]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["flatten_histories", "pack_histories", "pack_rows"]


def pack_histories(histories: Sequence[np.ndarray], max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Most-recent-first id matrix of the last ``max_items`` items of each history.

    Args:
        histories: int item-id arrays (ids ``>= 0``), OLDEST FIRST.
        max_items: most recent items kept per history, ``>= 1``.

    Returns:
        ``(ids, mask)``: int64 ``(n, L)`` with ``-1`` padding and bool ``(n, L)`` (True = real item), column 0
        = the most recent item, ``L = max(1, min(max_items, longest history))``.

    Raises:
        ValueError: a history that is not 1-D, not integer, or holds a negative id (the row is named).

    Example:
        >>> ids, mask = pack_histories([np.array([7, 8, 9]), np.array([], np.int64)], max_items=2)
        >>> ids
        array([[ 9,  8],
               [-1, -1]])
        >>> mask
        array([[ True,  True],
               [False, False]])
    """
    if isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer)) or max_items < 1:
        raise ValueError(f"max_items must be an integer >= 1; got {max_items!r}")
    flat, starts, lens = flatten_histories(histories, None, "histories")
    return pack_rows(flat, starts + lens, lens, int(max_items))


def flatten_histories(
    histories: Sequence[np.ndarray], n_items: int | None, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate histories: ``(flat, starts, lens)``, history ``u`` = ``flat[starts[u]:starts[u] + lens[u]]``.

    Raises:
        ValueError: a history that is not a 1-D integer array, or an id outside ``[0, n_items)`` (``>= 0``
            when ``n_items`` is None); ``name`` and the row are named.
    """
    arrays = []
    for u, h in enumerate(histories):
        a = np.asarray(h)
        if a.size == 0:
            arrays.append(np.empty(0, np.int64))
            continue
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name}[{u}] must be a 1-D integer item-id array; got shape {a.shape}, "
                             f"dtype {a.dtype}")
        arrays.append(a.astype(np.int64, copy=False))
    lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    starts = np.cumsum(lens) - lens
    if flat.size:
        bad = flat < 0 if n_items is None else (flat < 0) | (flat >= n_items)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            u = int(np.searchsorted(starts + lens, i, side="right"))
            rule = ">= 0" if n_items is None else f"in [0, {n_items}) (rows of item_emb)"
            raise ValueError(f"{name}[{u}] holds item id {int(flat[i])}; ids must be {rule}")
    return flat, starts, lens


def pack_rows(flat: np.ndarray, ends: np.ndarray, lens: np.ndarray,
              max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``flat[ends[i] - lens[i]:ends[i]]`` reversed, truncated to ``max_items``, ``-1`` padded."""
    keep = np.minimum(lens, max_items)  # (n,)
    width = max(1, int(keep.max()) if keep.size else 1)
    j = np.arange(width)
    mask = j[None, :] < keep[:, None]  # (n, L)
    idx = np.where(mask, ends[:, None] - 1 - j[None, :], 0)
    ids = np.where(mask, flat[idx] if flat.size else -1, -1).astype(np.int64)  # (n, L)
    return ids, mask
