"""Classic baselines behind one contract: random, most popular, ItemKNN, EASE and BM25 over item text.

Every baseline is fitted on the training interactions of a split and scores every catalog item for a user
from that user's history (the items known at test time), so the evaluator ranks them exactly like the
neural models: same split, same seen-item filter, same candidate set (`recsys_llm.baselines.rank_items`).

Example:
    >>> model = make_baseline("ease").fit(split.train, split.n_users, split.n_items)  # doctest: +SKIP
    >>> scores, ids = model.recommend(users, [hist[u] for u in users], k=10, seen=seen)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from recsys_llm.baselines import popularity_scores, rank_items

logger = logging.getLogger(__name__)


def _check_train(train: pd.DataFrame, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    for col, n in (("user", n_users), ("item", n_items)):
        if col not in train.columns:
            raise ValueError(f"train needs a {col!r} column; got {list(train.columns)}")
        v = train[col].to_numpy()
        if len(v) and (v.min() < 0 or v.max() >= n):
            raise ValueError(f"train column {col!r} spans {v.min()}..{v.max()}, outside 0..{n - 1}")
    return train["user"].to_numpy(np.int64), train["item"].to_numpy(np.int64)


def _history_matrix(histories: Sequence[np.ndarray], n_items: int):
    """Binary sparse ``(len(histories), n_items)`` matrix of the query histories."""
    from scipy import sparse

    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, np.int64) for h in histories]) if len(histories) else np.empty(0, int)
    x = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n_items))
    x.data[:] = 1.0  # duplicates collapse to 1 (binary)
    return x


class Recommender(ABC):
    """Fit on training interactions, then score every item for users given their histories."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.n_items: int | None = None

    @abstractmethod
    def _fit(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
             item_texts: Sequence[str] | None) -> None: ...

    @abstractmethod
    def _score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray: ...

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int,
            item_texts: Sequence[str] | None = None) -> Recommender:
        users, items = _check_train(train, n_users, n_items)
        self.n_items = n_items
        self._fit(users, items, n_users, n_items, item_texts)
        return self

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """float32 ``(len(users), n_items)`` scores; ``histories[i]`` are the items known for ``users[i]``."""
        if self.n_items is None:
            raise RuntimeError(f"{type(self).__name__}.score before fit(); call fit(train, n_users, n_items)")
        users = np.asarray(users, dtype=np.int64)
        if len(histories) != len(users):
            raise ValueError(f"{len(histories)} histories for {len(users)} users")
        return np.asarray(self._score(users, histories), dtype=np.float32)

    def recommend(self, users: np.ndarray, histories: Sequence[np.ndarray], k: int,
                  seen: Sequence[np.ndarray] | None = None, candidates: np.ndarray | None = None,
                  chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per user by full ranking, ``seen`` filtered, among ``candidates``."""
        users = np.asarray(users, dtype=np.int64)
        out_s, out_i = [], []
        for s in range(0, len(users), chunk):
            sc = self.score(users[s : s + chunk], histories[s : s + chunk])
            r = rank_items(sc, k, seen=None if seen is None else seen[s : s + chunk], candidates=candidates)
            out_s.append(r[0])
            out_i.append(r[1])
        if not out_i:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        return np.concatenate(out_s), np.concatenate(out_i)


class RandomRecommender(Recommender):
    """Uniform random scores, deterministic per (seed, user)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def _fit(self, users, items, n_users, n_items, item_texts) -> None:
        pass

    def _score(self, users, histories) -> np.ndarray:
        return np.stack([np.random.default_rng([self.seed, int(u)]).random(self.n_items, dtype=np.float32)
                         for u in users]) if len(users) else np.empty((0, self.n_items), np.float32)


class PopularityRecommender(Recommender):
    """score(u, i) = number of training interactions of item i (the same for every user)."""

    name = "popularity"

    def _fit(self, users, items, n_users, n_items, item_texts) -> None:
        self.counts = popularity_scores(pd.DataFrame({"item": items}), n_items)

    def _score(self, users, histories) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.n_items))


class ItemKNN(Recommender):
    """Item-based kNN: cosine similarity of item columns of the binary user-item matrix.

    sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink), each item keeping its ``k_neighbors`` most
    similar items (self excluded); score(u, j) = sum_{i in history(u)} sim(i, j).
    """

    name = "itemknn"

    def __init__(self, k_neighbors: int = 100, shrink: float = 0.0) -> None:
        super().__init__()
        self.k_neighbors, self.shrink = k_neighbors, shrink

    def _fit(self, users, items, n_users, n_items, item_texts) -> None:
        from scipy import sparse

        x = sparse.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
        x.data[:] = 1.0
        co = (x.T @ x).toarray().astype(np.float32)  # (items, items) co-occurrence counts
        norms = np.sqrt(np.diag(co)).astype(np.float32)
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-12)
        np.fill_diagonal(sim, 0.0)
        if self.k_neighbors < n_items:  # keep each row's top neighbours
            drop = np.argpartition(-sim, self.k_neighbors, axis=1)[:, self.k_neighbors :]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        self.sim = sparse.csr_matrix(sim)

    def _score(self, users, histories) -> np.ndarray:
        return (_history_matrix(histories, self.n_items) @ self.sim).toarray()


class EASE(Recommender):
    """EASE (Steck 2019): G = XᵀX + λI, P = G⁻¹, B = -P / diag(P) with diag(B) = 0; score = x_u B."""

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 30000) -> None:
        super().__init__()
        self.l2, self.max_items = l2, max_items

    def _fit(self, users, items, n_users, n_items, item_texts) -> None:
        from scipy import sparse

        if n_items > self.max_items:
            raise ValueError(f"EASE inverts an {n_items} x {n_items} matrix; above max_items={self.max_items} "
                             "use ItemKNN, or raise max_items if memory allows (8 * n_items^2 bytes)")
        x = sparse.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
        x.data[:] = 1.0
        g = (x.T @ x).toarray().astype(np.float64)  # (items, items)
        g[np.diag_indices(n_items)] += self.l2
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.b = b.astype(np.float32)

    def _score(self, users, histories) -> np.ndarray:
        return _history_matrix(histories, self.n_items) @ self.b


class BM25Recommender(Recommender):
    """BM25 (bm25s) over item texts; the query is the text of the user's ``query_items`` most recent items.

    Content only: it scores items nobody has interacted with, so it is the non-neural cold-start baseline.
    """

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, query_items: int = 10) -> None:
        super().__init__()
        self.k1, self.b, self.query_items = k1, b, query_items

    def _fit(self, users, items, n_users, n_items, item_texts) -> None:
        import bm25s

        if item_texts is None or len(item_texts) != n_items:
            raise ValueError(f"BM25 needs one text per item ({n_items}); got "
                             f"{None if item_texts is None else len(item_texts)}")
        self.texts = list(item_texts)
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b)
        self.retriever.index(bm25s.tokenize(self.texts, show_progress=False), show_progress=False)
        self.vocab = set(self.retriever.vocab_dict)

    def _score(self, users, histories) -> np.ndarray:
        import bm25s

        queries = [" ".join(self.texts[i] for i in np.asarray(h)[-self.query_items :]) for h in histories]
        tokens = bm25s.tokenize(queries, return_ids=False, show_progress=False) if queries else []
        out = np.zeros((len(queries), self.n_items), dtype=np.float32)
        for r, toks in enumerate(tokens):
            toks = [t for t in toks if t in self.vocab]
            if toks:
                out[r] = self.retriever.get_scores(toks)
        return out


BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (RandomRecommender, PopularityRecommender, ItemKNN, EASE, BM25Recommender)
}


def make_baseline(name: str, seed: int = 0) -> Recommender:
    """A baseline by name: random, popularity, itemknn, ease or bm25."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return RandomRecommender(seed) if name == "random" else BASELINES[name]()
