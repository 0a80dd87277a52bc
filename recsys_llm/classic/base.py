"""The `Recommender` contract every classic baseline implements, and the helpers they share.

* ``fit(train, n_users, n_items, item_texts=None, valid=None)`` learns from canonical interactions (int64
  ``user`` and ``item`` columns, contiguous ids; ``timestamp`` orders a user's history where a model reads
  order, ``rating`` is ignored: the models are implicit-feedback). ``valid`` is the validation protocol
  (`Validation`), used only by models that stop early on it (SASRec).
* ``score(users, histories)`` returns dense float32 ``(len(users), n_items)`` scores; ``histories[i]`` holds
  the item ids known for ``users[i]`` (the query, oldest first). Models other than Random score from the
  history alone, so users unseen at fit time (with a history) are fine.
* ``recommend(users, histories, k, seen=None, candidates=None)`` scores bounded row chunks and ranks each
  with the shared `recsys_llm.baselines.rank_items` (seen items excluded, ties to the lower item id,
  ``-1`` padding).
* ``fit_variants(grid, ...)`` fits one model per hyper-parameter setting; models override it where settings
  share work (EASE's Gram matrix, ItemKNN's similarities), which is what makes tuning on validation cheap.

`query_matrix` is the one place a history becomes a query row, binary or recency-weighted
(``0.5 ** (a / halflife)`` for the item ``a`` positions before the most recent).

Example:
    >>> import numpy as np
    >>> query_matrix([np.array([3, 1, 3, 2])], n_items=4, halflife=1.0).toarray()
    array([[0.  , 0.25, 1.  , 0.5 ]], dtype=float32)
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_llm.baselines import rank_items
from recsys_llm.classic.queries import Validation, query_matrix, recency_weights

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Recommender", "Validation", "query_matrix", "recency_weights"]  # the last three: classic.queries

logger = logging.getLogger(__name__)

_MAX_ROWS = 2048  # users scored per chunk in `recommend` ...
_MAX_CELLS = 1 << 24  # ... and at most this many (rows x items) float32 cells: ~64 MB


# ----------------------------------------------------------------------------------------------- helpers
def _check_count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1; got {value!r}")
    return int(value)


def _check_ids(ids: np.ndarray, n: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{what} {ids.min()}..{ids.max()}, outside 0..{n - 1}")


def _validate_train(train: pd.DataFrame, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the canonical frame and return its ``(user, item)`` int64 columns."""
    if not isinstance(train, pd.DataFrame):
        raise ValueError(f"train must be a pandas DataFrame; got {type(train).__name__}")
    missing = [c for c in ("user", "item") if c not in train.columns]
    if missing:
        raise ValueError(f"train is missing column(s) {missing}; got columns {list(train.columns)}")
    n_users = _check_count(n_users, "n_users")
    n_items = _check_count(n_items, "n_items")
    out = []
    for col, n in (("user", n_users), ("item", n_items)):
        values = train[col].to_numpy()
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"train column '{col}' must hold integer ids; got dtype {values.dtype}")
        values = values.astype(np.int64, copy=False)
        _check_ids(values, n, f"train column '{col}' spans")
        out.append(values)
    return out[0], out[1]


def _binary_matrix(users: np.ndarray, items: np.ndarray, n_rows: int, n_items: int) -> sp.csr_matrix:
    """Binary ``(n_rows, n_items)`` float64 CSR: 1 where a (row, item) pair occurs (repeats count once)."""
    x = sp.csr_matrix(
        (np.ones(users.size, dtype=np.float64), (users, items)), shape=(n_rows, n_items), dtype=np.float64
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


# ------------------------------------------------------------------------------------------- the contract
class Recommender(ABC):
    """Shared contract: ``fit`` on interactions, ``score`` dense per user, ``recommend`` top-k.

    Subclasses implement `_fit` and `_score`; the public methods validate inputs and handle chunking.
    """

    name: ClassVar[str]

    n_users: int
    n_items: int
    _fitted: bool = False

    def fit(
        self,
        train: pd.DataFrame,
        n_users: int,
        n_items: int,
        item_texts: Sequence[str] | None = None,
        valid: Validation | None = None,
    ) -> Self:
        """Learn from ``train``.

        Args:
            train: canonical interactions, int ``user`` in ``0..n_users-1`` and ``item`` in ``0..n_items-1``.
            n_users: number of users in the id space.
            n_items: catalog size; every item gets a score column, also items without interactions.
            item_texts: ``n_items`` texts, one per item id (only BM25 needs them; others ignore them).
            valid: the validation protocol, for models that stop early on it (SASRec; others ignore it).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: a missing column, non-integer ids, ids out of range, or bad sizes.
        """
        users, items = self._begin_fit(train, n_users, n_items)
        self._fit(users, items, train, item_texts, valid)
        self._fitted = True
        return self

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Dense scores of every catalog item for each query user.

        Args:
            users: ``(n,)`` non-negative int user ids.
            histories: ``n`` int arrays, the item ids known for each user (oldest first).

        Returns:
            float32 ``(n, n_items)``; higher is better.

        Raises:
            RuntimeError: called before `fit`.
            ValueError: mismatched lengths, or ids out of range.
        """
        self._check_fitted()
        users, hists = self._check_query(users, histories)
        out = self._score(users, hists)  # (users, items)
        return np.ascontiguousarray(out, dtype=np.float32)

    def recommend(
        self,
        users: np.ndarray,
        histories: Sequence[np.ndarray],
        k: int,
        seen: Sequence[np.ndarray] | None = None,
        candidates: np.ndarray | None = None,
        chunk: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per user: `score` in row chunks, each ranked by `rank_items`.

        Args:
            users: ``(n,)`` int user ids.
            histories: ``n`` int arrays, the query items of each user (oldest first).
            k: list length, ``>= 1``.
            seen: ``n`` arrays of item ids to exclude (often ``histories``); ``None`` excludes nothing.
            candidates: item ids to rank among (e.g. the cold items); default the whole catalog.
            chunk: users per chunk; default ``min(2048, 2**24 // n_items)`` so a chunk's
                ``(rows, n_items)`` float32 block stays around 64 MB. Results do not depend on it.

        Returns:
            ``(scores, ids)``: float32 ``(n, k)`` and int64 ``(n, k)``, best first; ``-1`` / ``-inf``
            padding when fewer than k items are eligible.
        """
        self._check_fitted()
        users, hists = self._check_query(users, histories)
        if seen is not None and len(seen) != len(users):
            raise ValueError(f"{len(seen)} seen arrays for {len(users)} users")
        if chunk is None:
            chunk = max(1, min(_MAX_ROWS, _MAX_CELLS // self.n_items))
        chunk = _check_count(chunk, "chunk")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
        out_scores = np.full((len(users), int(k)), -np.inf, dtype=np.float32)
        out_ids = np.full((len(users), int(k)), -1, dtype=np.int64)
        for start in range(0, len(users), chunk):
            stop = min(len(users), start + chunk)
            block = np.asarray(self._score(users[start:stop], hists[start:stop]), dtype=np.float32)
            out_scores[start:stop], out_ids[start:stop] = rank_items(
                block,  # (rows, items)
                int(k),
                seen=None if seen is None else seen[start:stop],
                candidates=candidates,
                users=users[start:stop],
            )
        return out_scores, out_ids

    def with_params(self, **params: Any) -> Self:
        """An unfitted copy with some hyper-parameters changed (names as in ``__init__``)."""
        unknown = set(params) - set(self._params())
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no hyper-parameter(s) {sorted(unknown)}; "
                f"it has {sorted(self._params())}"
            )
        return type(self)(**{**self._params(), **params})

    def fit_variants(
        self,
        grid: Sequence[Mapping[str, Any]],
        train: pd.DataFrame,
        n_users: int,
        n_items: int,
        item_texts: Sequence[str] | None = None,
        valid: Validation | None = None,
    ) -> Iterator[tuple[dict[str, Any], Recommender]]:
        """Fit one model per setting of ``grid``, lazily, in grid order.

        Equal to ``self.with_params(**p).fit(...)`` for each ``p``; models whose settings share work (a Gram
        matrix, a similarity matrix) do that work once, through `_fit_shared`.

        Args:
            grid: hyper-parameter settings (each a mapping of ``__init__`` names to values).
            train, n_users, n_items, item_texts, valid: as in `fit`.

        Yields:
            ``(setting, fitted model)``; the model may share arrays with the next one, so keep only the
            ones you need.
        """
        models = [self.with_params(**params) for params in grid]
        shared: dict[Any, Any] = {"grid": models}
        for params, model in zip(grid, models, strict=True):
            users, items = model._begin_fit(train, n_users, n_items)
            model._fit_shared(users, items, train, item_texts, valid, shared)
            model._fitted = True
            yield dict(params), model

    # ------------------------------------------------------------------------------------------ internals
    @abstractmethod
    def _fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        train: pd.DataFrame,
        item_texts: Sequence[str] | None,
        valid: Validation | None,
    ) -> None:
        """Learn the model from validated int64 ``users`` / ``items`` (``self.n_users/n_items`` are set)."""

    def _fit_shared(self, users, items, train, item_texts, valid, shared: dict[Any, Any]) -> None:
        """`_fit` within `fit_variants`: ``shared`` holds work other settings of the same grid may reuse
        (``shared["grid"]`` lists every model of the grid). Default: nothing is shared."""
        self._fit(users, items, train, item_texts, valid)

    @abstractmethod
    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """``(len(users), n_items)`` scores for validated inputs."""

    def _begin_fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``train``, record the sizes, return its int64 ``(user, item)`` columns."""
        users, items = _validate_train(train, n_users, n_items)
        self.n_users, self.n_items = int(n_users), int(n_items)
        return users, items

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(
                f"{type(self).__name__} used before fit(): call .fit(train, n_users, n_items) first"
            )

    def _check_query(
        self, users: np.ndarray, histories: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        users = np.asarray(users)
        if users.ndim != 1 or (users.size and not np.issubdtype(users.dtype, np.integer)):
            raise ValueError(f"users must be a 1-D array of int ids; got shape {users.shape}, {users.dtype}")
        users = users.astype(np.int64, copy=False)
        if users.size and users.min() < 0:
            raise ValueError(f"user ids must be >= 0; got min {users.min()}")
        if len(histories) != len(users):
            raise ValueError(f"{len(histories)} histories for {len(users)} users")
        hists = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
        if hists:
            _check_ids(np.concatenate(hists), self.n_items, "history item ids span")
        return users, hists

    def _query_matrix(self, histories: list[np.ndarray], halflife: float = 0.0) -> sp.csr_matrix:
        """float32 ``(len(histories), n_items)`` CSR of the histories (`query_matrix`)."""
        return query_matrix(histories, self.n_items, halflife)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        return {}
