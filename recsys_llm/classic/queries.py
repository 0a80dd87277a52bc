"""Queries and the validation protocol of the classic baselines.

`query_matrix` is the one place a history becomes a query row, binary or recency-weighted
(``0.5 ** (a / halflife)`` for the item ``a`` positions before the most recent); the hybrid's collaborative
part reads its queries through it too. `Validation` is the protocol baselines are tuned and stopped on.

Example:
    >>> import numpy as np
    >>> query_matrix([np.array([3, 1, 3, 2])], n_items=4, halflife=1.0).toarray()
    array([[0.  , 0.25, 1.  , 0.5 ]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_llm.data.splits import histories, targets
from recsys_llm.protocol import sample_users
from recsys_llm.ranking import topk_metrics

__all__ = ["Validation", "query_matrix", "recency_weights"]


class Ranker(Protocol):
    """What :class:`Validation` scores: anything with ``recommend`` (every ``classic.base.Recommender``), so this
    module does not import ``classic.base``, which imports it."""

    def recommend(self, users: np.ndarray, histories: Sequence[np.ndarray], k: int,
                  seen: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def recency_weights(history: np.ndarray, halflife: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The distinct items of one history and their query weights.

    With ``a`` the number of positions between an item's most recent occurrence and the end of the history
    (0 for the most recent item)::

        weight = 0.5 ** (a / halflife)      (halflife > 0)
        weight = 1                          (halflife = 0: the classic binary query)

    Args:
        history: item ids, oldest first; repeats count once, at their most recent position.
        halflife: positions over which an item's weight halves (``>= 0``).

    Returns:
        ``(ids, weights)``: sorted unique int64 ids and their float32 weights.

    Example:
        >>> recency_weights(np.array([5, 7, 5, 9]), halflife=2.0)
        (array([5, 7, 9]), array([0.70710677, 0.5       , 1.        ], dtype=float32))
    """
    h = np.asarray(history, dtype=np.int64).ravel()
    ids, age = np.unique(h[::-1], return_index=True)  # age = positions before the most recent
    if halflife <= 0:
        return ids, np.ones(ids.size, np.float32)
    return ids, (0.5 ** (age / float(halflife))).astype(np.float32)


def query_matrix(histories: Sequence[np.ndarray], n_items: int, halflife: float = 0.0) -> sp.csr_matrix:
    """float32 ``(len(histories), n_items)`` CSR of query rows, weighted by `recency_weights`.

    Ids ``>= n_items`` (items added after a model was fitted) are left out; callers check for negative ids.

    Args:
        histories: item ids per user, oldest first.
        n_items: number of columns.
        halflife: recency half-life in positions (0 = binary).

    Returns:
        The query matrix ``Q``; a model scores ``Q @ S`` for an item-item matrix ``S``.
    """
    rows, cols, vals = [], [], []
    for r, h in enumerate(histories):
        ids, w = recency_weights(h, halflife)
        keep = ids < n_items
        rows.append(np.full(int(keep.sum()), r, dtype=np.int64))
        cols.append(ids[keep])
        vals.append(w[keep])
    if not rows:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(histories), n_items),
        dtype=np.float32,
    )


@dataclasses.dataclass
class Validation:
    """The validation protocol: rank each user's validation items from their query history.

    NDCG@k of a model = mean over `users` of NDCG@k (`recsys_llm.metrics.ndcg_at_k`) of
    ``model.recommend(users, histories, k, seen=exclude)``: full ranking over the catalog, ``exclude``
    filtered (the training items, the query itself), ties to the lower item id. This is the protocol the
    hybrid, the reranker and fine-tuning are selected on (:func:`recsys_llm.protocol.validation_users`).

    Attributes:
        users: ``(n,)`` int64 user ids.
        histories: ``n`` query histories (the training history, oldest first).
        targets: ``n`` arrays of validation item ids.
        exclude: ``n`` arrays of items not to rank; default the histories.
        k: the cut-off.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]
    exclude: list[np.ndarray] | None = None
    k: int = 10

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        if not len(self.histories) == len(self.targets) == len(self.users):
            raise ValueError(
                f"Validation: {len(self.users)} users, {len(self.histories)} histories and "
                f"{len(self.targets)} target arrays; one of each per user"
            )
        if self.exclude is None:
            self.exclude = self.histories
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1; got {self.k!r}")

    @classmethod
    def from_frames(
        cls,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        n_users: int,
        max_users: int = 0,
        seed: int = 0,
        k: int = 10,
    ) -> Validation:
        """The validation users of a split: those with a validation item and a training history.

        Args:
            train, valid: canonical frames (``user``, ``item``, ``timestamp``), e.g. ``split.train``/``split.valid``.
            n_users: id-space size.
            max_users: a seeded sample of this many users (0 = all), drawn by :func:`recsys_llm.protocol.validation_users`
                draws it, so the same ``(max_users, seed)`` gives the hybrid's users.
            seed: the sample's seed.
            k: the NDCG cut-off.

        Returns:
            Queries = training histories (oldest first), targets = validation items, training items excluded.
        """
        hist, tg = histories(train, n_users), targets(valid, n_users)
        users = np.array([u for u in range(n_users) if len(tg[u]) and len(hist[u])], dtype=np.int64)
        users = sample_users(users, max_users, seed)  # the same draw as protocol.validation_users
        return cls(users, [hist[u] for u in users], [tg[u] for u in users], k=k)

    def ndcg(self, model: Ranker) -> float:
        """Mean validation NDCG@k of a fitted model (users without targets do not count)."""
        return float(np.nanmean(self.per_user(model)))

    def per_user(self, model: Ranker) -> np.ndarray:
        """Per-user validation NDCG@k, float64 ``(n,)``."""
        ids = model.recommend(self.users, self.histories, self.k, seen=self.exclude)[1]  # (n, k)
        return topk_metrics(ids, self.targets, self.k, ("ndcg",))[f"ndcg@{self.k}"]
