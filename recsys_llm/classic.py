"""Classic recommender baselines behind one small contract: Random, Popularity, ItemKNN, EASE and BM25.

Every model is a `Recommender`:

* ``fit(train, n_users, n_items, item_texts=None)`` learns from canonical interactions (int64 ``user`` and
  ``item`` columns, contiguous ids; ``timestamp``/``rating`` are ignored: the models are implicit-feedback).
* ``score(users, histories)`` returns dense float32 ``(len(users), n_items)`` scores; ``histories[i]`` holds
  the item ids known for ``users[i]`` (the query, oldest first). Models other than Random score from the
  history alone, so users unseen at fit time (with a history) are fine.
* ``recommend(users, histories, k, seen=None, candidates=None)`` scores bounded row chunks and ranks each
  with the shared `recsys_llm.baselines.rank_items` (seen items excluded, ties to the lower item id,
  ``-1`` padding).

`make_baseline(name)` builds one by its `Recommender.name` (``random``, ``popularity``, ``itemknn``,
``ease``, ``bm25``); `recsys_llm.compare` evaluates them next to the neural models.

Example:
    >>> model = EASE(l2=100.0).fit(train, n_users, n_items)  # doctest: +SKIP
    >>> scores, ids = model.recommend(users, histories, k=10, seen=histories)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_llm.baselines import popularity_scores, rank_items

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BASELINES",
    "EASE",
    "BM25Recommender",
    "ItemKNN",
    "PopularityRecommender",
    "RandomRecommender",
    "Recommender",
    "make_baseline",
]

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
    ) -> Self:
        """Learn from ``train``.

        Args:
            train: canonical interactions, int ``user`` in ``0..n_users-1`` and ``item`` in ``0..n_items-1``.
            n_users: number of users in the id space.
            n_items: catalog size; every item gets a score column, also items without interactions.
            item_texts: ``n_items`` texts, one per item id (only BM25 needs them; others ignore them).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: a missing column, non-integer ids, ids out of range, or bad sizes.
        """
        users, items = _validate_train(train, n_users, n_items)
        self.n_users, self.n_items = int(n_users), int(n_items)
        self._fit(users, items, train, item_texts)
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

    # ------------------------------------------------------------------------------------------ internals
    @abstractmethod
    def _fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        train: pd.DataFrame,
        item_texts: Sequence[str] | None,
    ) -> None:
        """Learn the model from validated int64 ``users`` / ``items`` (``self.n_users/n_items`` are set)."""

    @abstractmethod
    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """``(len(users), n_items)`` scores for validated inputs."""

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

    def _query_matrix(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        """Binary ``(len(histories), n_items)`` CSR of the histories."""
        lens = np.fromiter((h.size for h in histories), dtype=np.int64, count=len(histories))
        rows = np.repeat(np.arange(len(histories), dtype=np.int64), lens)
        cols = np.concatenate(histories) if histories else np.empty(0, np.int64)
        return _binary_matrix(rows, cols, len(histories), self.n_items)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, object]:
        return {}


# ----------------------------------------------------------------------------------------------- Random
class RandomRecommender(Recommender):
    """Uniform random scores: ``score(u, i) ~ U[0, 1)``, drawn from a generator seeded by ``(seed, u)``.

    The same (seed, user) always gets the same scores, whatever the batch it is scored in.

    Args:
        seed: non-negative int seed.

    Example:
        >>> m = RandomRecommender(seed=0).fit(train, n_users, n_items)
        >>> m.score(np.array([3]), [np.array([1, 2])]).shape      # (1, n_items)
    """

    name: ClassVar[str] = "random"

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        self.seed = int(seed)

    def _params(self) -> dict[str, object]:
        return {"seed": self.seed}

    def _fit(self, users, items, train, item_texts) -> None:
        pass

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)  # (users, items)
        for row, u in enumerate(users):
            out[row] = np.random.default_rng([self.seed, int(u)]).random(self.n_items, dtype=np.float32)
        return out


# ------------------------------------------------------------------------------------------- Popularity
class PopularityRecommender(Recommender):
    """Most popular: ``score(u, i) = |{rows of train with item == i}|`` for every user.

    Wraps `recsys_llm.baselines.popularity_scores` (every interaction counts, repeats too).

    Example:
        >>> m = PopularityRecommender().fit(train, n_users, n_items)
        >>> scores, ids = m.recommend(users, histories, k=10, seen=histories)
    """

    name: ClassVar[str] = "popularity"

    def _fit(self, users, items, train, item_texts) -> None:
        self.item_scores_ = popularity_scores(train, self.n_items)  # (items,) float32

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(users), self.n_items)).copy()  # (users, items)


# ---------------------------------------------------------------------------------------------- ItemKNN
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

    def _params(self) -> dict[str, object]:
        return {"k_neighbors": self.k_neighbors, "shrink": self.shrink}

    def _fit(self, users, items, train, item_texts) -> None:
        x = _binary_matrix(users, items, self.n_users, self.n_items)  # (users, items)
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())  # (items,)
        co = (x.T @ x).tocoo()  # (items, items) co-occurrence counts
        off = co.row != co.col
        rows, cols, dots = co.row[off], co.col[off], co.data[off]
        denom = norms[rows] * norms[cols] + self.shrink
        sims = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        keep = sims > 0
        rows, cols, sims = rows[keep].astype(np.int64), cols[keep].astype(np.int64), sims[keep]
        # top-k per column i: order by (column, -sim, row) and keep each column's first k entries
        order = np.lexsort((rows, -sims, cols))
        rows, cols, sims = rows[order], cols[order], sims[order]
        starts = np.searchsorted(cols, np.arange(self.n_items), "left")  # (items,) first entry per column
        rank = np.arange(cols.size) - starts[cols]
        top = rank < self.k_neighbors
        self.similarity_ = sp.csr_matrix(
            (sims[top].astype(np.float32), (rows[top], cols[top])), shape=(self.n_items, self.n_items)
        )  # (items, items): S[h, i]

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        q = self._query_matrix(histories).astype(np.float32)  # (users, items) binary
        return (q @ self.similarity_).toarray()  # (users, items)


# ------------------------------------------------------------------------------------------------- EASE
class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019), closed form.

    With ``X`` the binary ``(users, items)`` matrix (repeated interactions count once)::

        G = X^T X + l2 * I,   P = G^{-1},   B[j, i] = -P[j, i] / P[i, i],   B[i, i] = 0
        score(u, .) = x_u @ B                                      (x_u the binary history)

    ``G``, ``P`` are dense ``(n_items, n_items)`` float64 during fit (``B`` is kept as float32), so the
    catalog is capped at ``max_items``.

    Args:
        l2: ridge strength ``> 0``.
        max_items: refuse catalogs larger than this (``n_items^2 * 8`` bytes per dense matrix).

    Raises:
        ValueError: in ``fit``, when ``n_items > max_items``.

    Example:
        >>> m = EASE(l2=500.0).fit(train, n_users, n_items)
        >>> scores, ids = m.recommend(users, histories, k=10, seen=histories)
    """

    name: ClassVar[str] = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 30000) -> None:
        if not np.isfinite(l2) or l2 <= 0:
            raise ValueError(f"l2 must be a finite number > 0; got {l2!r}")
        self.l2 = float(l2)
        self.max_items = _check_count(max_items, "max_items")

    def _params(self) -> dict[str, object]:
        return {"l2": self.l2, "max_items": self.max_items}

    def _fit(self, users, items, train, item_texts) -> None:
        n = self.n_items
        if n > self.max_items:
            gib = n * n * 8 / 2**30
            raise ValueError(
                f"EASE needs dense {n} x {n} float64 matrices (~{gib:.1f} GiB each) and n_items={n} exceeds "
                f"max_items={self.max_items}: prune the catalog to popular items, use ItemKNN, or pass a larger "
                "max_items if the memory is there"
            )
        x = _binary_matrix(users, items, self.n_users, n)  # (users, items)
        g = (x.T @ x).toarray()  # (items, items) float64 Gram matrix
        g[np.diag_indices(n)] += self.l2
        p = np.linalg.inv(g)  # (items, items)
        del g
        p /= -np.diag(p)  # column i divided by -P[i, i]
        p[np.diag_indices(n)] = 0.0
        self.weights_ = p.astype(np.float32)  # (items, items): B

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        q = self._query_matrix(histories).astype(np.float32)  # (users, items) binary
        return np.asarray(q @ self.weights_)  # (users, items)


# ------------------------------------------------------------------------------------------------- BM25
class BM25Recommender(Recommender):
    """Content-based BM25: the user's recent item texts are the query, every item text a document.

    Items are indexed with `bm25s` (``method="lucene"``, whose tf part omits the constant ``k1 + 1``).
    For user ``u`` the query ``Q_u`` is the tokens of the texts of the last ``query_items`` history items
    (histories are oldest first); a term repeated in the query counts once per occurrence::

        score(u, i) = sum_{t in Q_u} IDF(t) * tf(t, i) / (tf(t, i) + k1 * (1 - b + b * |i| / avgdl))
        IDF(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          (N items, df(t) items containing t)

    Items with an empty text (or only stopwords) score 0; items without interactions (cold) are scored from
    their text like any other. Tokenization: `bm25s.tokenize` (lowercase, words of >= 2 word characters,
    optional English stopword removal).

    Args:
        k1: term-frequency saturation.
        b: length normalisation in ``[0, 1]``.
        query_items: how many of the most recent history items form the query (``>= 1``).
        stopwords: passed to `bm25s.tokenize` (``"en"``, a list of words, or ``None`` to keep all).

    Example:
        >>> m = BM25Recommender().fit(train, n_users, n_items, item_texts=titles)
        >>> scores, ids = m.recommend(users, histories, k=10, seen=histories, candidates=cold_items)
    """

    name: ClassVar[str] = "bm25"

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        query_items: int = 10,
        stopwords: str | list[str] | None = "en",
    ) -> None:
        if not np.isfinite(k1) or k1 < 0:
            raise ValueError(f"k1 must be a finite number >= 0; got {k1!r}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be in [0, 1]; got {b!r}")
        self.k1, self.b = float(k1), float(b)
        self.query_items = _check_count(query_items, "query_items")
        self.stopwords = stopwords

    def _params(self) -> dict[str, object]:
        return {"k1": self.k1, "b": self.b, "query_items": self.query_items, "stopwords": self.stopwords}

    def _fit(self, users, items, train, item_texts) -> None:
        import bm25s

        if item_texts is None:
            raise ValueError("BM25Recommender.fit needs item_texts: one text per item (ids 0..n_items-1)")
        if isinstance(item_texts, str) or len(item_texts) != self.n_items:
            got = "a single string" if isinstance(item_texts, str) else f"{len(item_texts)} texts"
            raise ValueError(f"item_texts must hold one text per item (n_items={self.n_items}); got {got}")
        texts = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in item_texts]
        tokens = bm25s.tokenize(
            texts, stopwords=self.stopwords, return_ids=False, show_progress=False
        )  # n_items lists of str; [] for an empty text
        self.item_tokens_: list[list[str]] = [list(t) for t in tokens]
        self.empty_items_ = np.array([not t for t in self.item_tokens_], dtype=bool)  # (items,)
        if self.empty_items_.all():
            logger.warning("BM25Recommender: every item text is empty after tokenization; all scores are 0")
            self.retriever_ = None
            return
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(self.item_tokens_, show_progress=False)
        self.retriever_ = retriever

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), self.n_items), dtype=np.float32)  # (users, items)
        if self.retriever_ is None:
            return out
        for row, hist in enumerate(histories):
            query = [tok for i in hist[-self.query_items :] for tok in self.item_tokens_[i]]
            if query:  # every token of an item text is in the index vocabulary
                out[row] = self.retriever_.get_scores(query)  # (items,)
        out[:, self.empty_items_] = 0.0
        return out


# ------------------------------------------------------------------------------------------------ registry
BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (RandomRecommender, PopularityRecommender, ItemKNN, EASE, BM25Recommender)
}


def make_baseline(name: str, seed: int = 0) -> Recommender:
    """A baseline with its default hyper-parameters, by `Recommender.name`.

    Args:
        name: one of ``random``, ``popularity``, ``itemknn``, ``ease``, ``bm25``.
        seed: the seed of ``random`` (the other baselines are deterministic).

    Returns:
        An unfitted `Recommender`.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> make_baseline("ease")
        EASE(l2=500.0, max_items=30000)
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return RandomRecommender(seed) if name == "random" else BASELINES[name]()
