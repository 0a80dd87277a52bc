"""Item-based k-nearest neighbours: cosine similarity on the binary user-item matrix, top-k per item."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys_llm.classic.base import Recommender, _binary_matrix, _check_count

__all__ = ["ItemKNN", "item_neighbours"]

_BLOCK_CELLS = 1 << 22  # (items in a block) x n_items float64 similarities at a time: ~32 MB


def item_neighbours(
    x: sp.csr_matrix, shrink: float, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` most similar items of every item, by shrunk cosine, each item's list best first.

    ``sim(j, i) = (X[:, j] . X[:, i]) / (||X[:, j]|| * ||X[:, i]|| + shrink)``, ``sim(i, i) = 0``; only
    positive similarities are kept; ties go to the lower item id. The similarity is symmetric, so item
    ``i``'s neighbours are found on row ``i`` of ``X^T X``, computed in blocks of rows (no ``n_items^2``
    matrix is built).

    Args:
        x: binary ``(users, items)`` CSR.
        shrink: added to the cosine denominator (``>= 0``).
        k: neighbours kept per item.

    Returns:
        ``(neighbour, item, sim, rank)``: int64, int64, float64, int64 arrays, one entry per kept pair;
        ``rank`` is the neighbour's 0-based position in ``item``'s list, so the top ``k' <= k`` lists are
        the entries with ``rank < k'``.
    """
    n = x.shape[1]
    xt = x.T.tocsr()  # (items, users)
    xc = x.tocsc()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())  # (items,)
    norms[norms == 0] = 1.0  # an item without users has co-occurrence 0 with everything: sim 0, not 0/0
    kk = min(int(k), n)
    block = max(1, _BLOCK_CELLS // n)
    out: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = (xt[start:stop] @ xc).toarray()  # (b, items) co-occurrence counts ...
        sims /= norms[start:stop, None] * norms[None, :] + shrink  # ... divided into cosines, in place
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        kth = -np.partition(-sims, kk - 1, axis=1)[:, kk - 1 : kk]  # (b, 1): k-th largest per row
        take = sims > kth  # never more than kk per row; all positive (sims >= 0)
        tied = (sims == kth) & (kth > 0)
        room = kk - take.sum(axis=1)
        take |= tied
        over = np.flatnonzero(tied.sum(axis=1) > room)  # rows with more ties at the k-th value than room
        if over.size:  # ... keep the lower ids among those ties
            t = tied[over]
            take[over] &= ~t | (np.cumsum(t, axis=1) <= room[over, None])
        rows, cols = np.nonzero(take)
        vals = sims[rows, cols]
        order = np.lexsort((cols, -vals, rows))  # per row: best first, ties -> lower id
        rows, cols, vals = rows[order], cols[order], vals[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows, "left")
        out.append((cols.astype(np.int64), rows.astype(np.int64) + start, vals, rank.astype(np.int64)))
    if not out:
        return tuple(np.empty(0, t) for t in (np.int64, np.int64, np.float64, np.int64))  # type: ignore[return-value]
    neighbour, item, sim, rank = (np.concatenate(parts) for parts in zip(*out, strict=True))
    return neighbour, item, sim, rank


class ItemKNN(Recommender):
    """Item-based k-nearest neighbours with cosine similarity on the binary user-item matrix.

    With ``X`` the binary ``(users, items)`` matrix (repeated interactions count once)::

        sim(j, i) = (X[:, j] . X[:, i]) / (||X[:, j]|| * ||X[:, i]|| + shrink),   sim(i, i) = 0
        S[:, i]   = sim(., i) restricted to the k_neighbors largest entries of column i (ties: lower id)
        score(u, i) = sum over history items h of S[h, i]        (x_u @ S, x_u the binary history)

    Args:
        k_neighbors: neighbours kept per item column (``>= 1``).
        shrink: added to the cosine denominator (``>= 0``); damps similarities backed by few users.

    Example:
        >>> m = ItemKNN(k_neighbors=50).fit(train, n_users, n_items)
        >>> m.score(np.array([0]), [np.array([4, 7])]).shape      # (1, n_items)
    """

    name: ClassVar[str] = "itemknn"

    def __init__(self, k_neighbors: int = 100, shrink: float = 0.0) -> None:
        self.k_neighbors = _check_count(k_neighbors, "k_neighbors")
        if not np.isfinite(shrink) or shrink < 0:
            raise ValueError(f"shrink must be a finite number >= 0; got {shrink!r}")
        self.shrink = float(shrink)

    def _params(self) -> dict[str, Any]:
        return {"k_neighbors": self.k_neighbors, "shrink": self.shrink}

    def _fit(self, users, items, train, item_texts, valid) -> None:
        x = _binary_matrix(users, items, self.n_users, self.n_items)  # (users, items)
        self._set_similarity(item_neighbours(x, self.shrink, self.k_neighbors))

    def _fit_shared(self, users, items, train, item_texts, valid, shared: dict[Any, Any]) -> None:
        """One similarity computation per ``shrink``: the lists of the largest ``k_neighbors`` the grid asks
        for with that shrink, cut to this model's k (consecutive settings with the same shrink share it)."""
        if "x" not in shared:
            shared["x"] = _binary_matrix(users, items, self.n_users, self.n_items)
        if shared.get("neighbours", (None,))[0] != self.shrink:
            k_max = max(m.k_neighbors for m in shared["grid"] if m.shrink == self.shrink)
            shared["neighbours"] = (self.shrink, item_neighbours(shared["x"], self.shrink, k_max))
        self._set_similarity(shared["neighbours"][1])

    def _set_similarity(self, neighbours: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        neighbour, item, sim, rank = neighbours
        top = rank < self.k_neighbors
        self.similarity_ = sp.csr_matrix(
            (sim[top].astype(np.float32), (neighbour[top], item[top])), shape=(self.n_items, self.n_items)
        )  # (items, items): S[h, i]

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        q = self._query_matrix(histories)  # (users, items) binary
        return (q @ self.similarity_).toarray()  # (users, items)
