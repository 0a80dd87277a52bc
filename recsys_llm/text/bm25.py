"""BM25 over item texts as two sparse matrices: the one weighting the hybrid and fine-tuning share.

``bm25s``' tokenizer and its ``method="lucene"`` weights, computed with scipy so that any product of them is a
sparse matrix product::

    W[i, t] = IDF(t) * C[i, t] / (C[i, t] + k1 * (1 - b + b * |i| / avgdl)),
    IDF(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

``C`` (items x vocabulary) holds token counts. A query with term counts ``q`` scores item ``i`` as ``q @ W[i]``;
the hybrid's lexical part (``recsys_llm.hybrid.lexical``) queries with a user's recent item texts, hard-negative
mining (``recsys_llm.train.hard_negatives``) with one item's own text.

Example:
    >>> weights, counts = bm25_matrices(["red shoe", "blue shoe", "red hat"])
    >>> (counts[0] @ weights.T).toarray().round(3)   # the red shoe's text as the query
    array([[0.376, 0.188, 0.188]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np
import scipy.sparse as sp

__all__ = ["bm25_matrices"]


def bm25_matrices(
    texts: Sequence[str | None], k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en"
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(W, C)``: BM25 weights and token counts, each ``(len(texts), vocab)`` CSR float32.

    Tokenised by ``bm25s.tokenize`` (lower case, words of >= 2 word characters, ``stopwords`` removed); a
    missing text (None or NaN) is an empty document.
    """
    clean = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in texts]
    tokens = bm25s.tokenize(clean, stopwords=stopwords, return_ids=False, show_progress=False)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, toks in enumerate(tokens):
        for tok in toks:
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
    n = len(clean)
    counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, max(len(vocab), 1)))
    counts.sum_duplicates()
    length = np.asarray(counts.sum(axis=1)).ravel()  # (items,) tokens per text
    avgdl = max(float(length.mean()), 1e-9) if n else 1.0
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    tf = counts.data
    norm = k1 * (1.0 - b + b * np.repeat(length, np.diff(counts.indptr)) / avgdl)
    w = idf[counts.indices] * tf / (tf + norm)
    weights = sp.csr_matrix((w.astype(np.float32), counts.indices, counts.indptr), shape=counts.shape)
    return weights, counts.astype(np.float32)
