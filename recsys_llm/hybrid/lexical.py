"""The hybrid's lexical part: BM25 over item texts as two sparse matrices, saved with the hybrid.

The same scores as :class:`recsys_llm.classic.BM25Recommender` (``bm25s``, ``method="lucene"``): the query of a
user is the tokens of the texts of their last ``query_items`` history items (a repeated term counts once per
occurrence), every item text a document::

    score(u, i) = sum_t q_u[t] * W[i, t],    q_u = sum_{h in last query_items of u} C[h]
    W[i, t] = IDF(t) * C[i, t] / (C[i, t] + k1 * (1 - b + b * |i| / avgdl)),
    IDF(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

``C`` (items x vocabulary) holds token counts. Both matrices are stored (``lexical.safetensors``), so serving
needs neither the texts nor ``bm25s``' index; items added after fitting score 0, as in the collaborative part.

Example:
    >>> lex = LexicalScorer.fit(["red shoe", "blue shoe", "red hat"])
    >>> lex.score([np.array([0])]).round(3)   # a user who liked the red shoe
    array([[0.376, 0.188, 0.188]], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_llm.hybrid.sparse import load_sparse, rows_dot, save_sparse
from recsys_llm.text.bm25 import bm25_matrices

__all__ = ["LEXICAL_FILE", "LexicalScorer"]

LEXICAL_FILE = "lexical.safetensors"


@dataclasses.dataclass
class LexicalScorer:
    """BM25 as ``q_u @ W.T`` (module docstring).

    Attributes:
        weights: ``W`` ``(n_items, vocab)`` CSR float32; counts: ``C`` ``(n_items, vocab)`` CSR float32.
        query_items: most recent history items whose texts form the query.
    """

    weights: sp.csr_matrix
    counts: sp.csr_matrix
    query_items: int = 10

    @property
    def n_items(self) -> int:
        return int(self.weights.shape[0])

    @classmethod
    def fit(cls, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, query_items: int = 10,
            stopwords: str | None = "en") -> LexicalScorer:
        """Tokenise (``bm25s.tokenize``: lower case, words of >= 2 word characters, stopwords removed) and
        weight every item text (:func:`recsys_llm.text.bm25.bm25_matrices`)."""
        weights, counts = bm25_matrices(texts, k1, b, stopwords)
        return cls(weights, counts, int(query_items))

    def score(self, histories: Sequence[np.ndarray], n_items: int | None = None) -> np.ndarray:
        """``(len(histories), n_items)`` float32 BM25 scores; items beyond the fitted ones score 0, and history
        ids beyond them add no query terms."""
        n_out = self.n_items if n_items is None else int(n_items)
        if len(histories) == 1:  # serving: one query, numpy gathers instead of scipy products (same sums)
            h = np.asarray(histories[0], dtype=np.int64).ravel()[-self.query_items :]
            h = h[(h >= 0) & (h < self.n_items)]
            out = np.zeros((1, n_out), dtype=np.float32)
            query = rows_dot(self.counts, h, np.ones(len(h), np.float32))  # (vocab,) term counts
            out[0, : min(n_out, self.n_items)] = (self.weights @ query)[:n_out]
            return out
        rows, cols = [], []
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64).ravel()[-self.query_items :]
            h = h[(h >= 0) & (h < self.n_items)]
            rows.append(np.full(len(h), r))
            cols.append(h)
        pick = sp.csr_matrix((np.ones(sum(map(len, cols)), np.float32),
                              (np.concatenate(rows) if rows else [], np.concatenate(cols) if cols else [])),
                             shape=(len(histories), self.n_items))  # (users, items): repeats add up
        query = pick @ self.counts  # (users, vocab)
        out = np.zeros((len(histories), n_out), dtype=np.float32)
        out[:, : min(n_out, self.n_items)] = (query @ self.weights.T).toarray()[:, :n_out]
        return out

    def save(self, folder: str | Path) -> None:
        save_sparse(Path(folder) / LEXICAL_FILE, self.weights, {
            "count_indptr": self.counts.indptr.astype(np.int64), "count_indices": self.counts.indices.astype(np.int64),
            "count_data": self.counts.data.astype(np.float32)},
            metadata={"query_items": str(self.query_items), "vocab": str(self.weights.shape[1])})

    @classmethod
    def load(cls, folder: str | Path) -> LexicalScorer:
        t, meta = load_sparse(Path(folder) / LEXICAL_FILE)
        shape = (len(t["indptr"]) - 1, int(meta["vocab"]))
        weights = sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=shape)
        counts = sp.csr_matrix((t["count_data"], t["count_indices"], t["count_indptr"]), shape=shape)
        return cls(weights, counts, int(meta["query_items"]))
