"""Content-based BM25 over item texts: the user's recent item texts are the query."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import bm25s
import numpy as np

from recsys_llm.classic.base import Recommender, _check_count

__all__ = ["BM25Recommender"]

logger = logging.getLogger(__name__)


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

    def _params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "query_items": self.query_items, "stopwords": self.stopwords}

    def _fit(self, users, items, train, item_texts, valid) -> None:
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

    def _fit_shared(self, users, items, train, item_texts, valid, shared: dict[Any, Any]) -> None:
        """One index per ``(k1, b, stopwords)``: settings differing only in ``query_items`` share it."""
        key = (self.k1, self.b, repr(self.stopwords))
        if shared.get("bm25", (None,))[0] != key:
            self._fit(users, items, train, item_texts, valid)
            shared["bm25"] = (key, self.item_tokens_, self.empty_items_, self.retriever_)
        _, self.item_tokens_, self.empty_items_, self.retriever_ = shared["bm25"]

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
