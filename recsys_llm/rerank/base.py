"""The reranker contract: score (user text, item text) pairs, reorder the retriever's top candidates.

A :class:`Reranker` implements only :meth:`Reranker.score`; :meth:`Reranker.rerank` is shared. It takes the
retriever's output in the faiss convention (``ids`` int64 with ``-1`` padding, ``scores`` aligned with them),
scores every real candidate of the first ``depth`` columns in one flat call, and sorts those by the new score.
Candidates beyond ``depth`` follow in retriever order, and ``-1`` pads always come last.

Example:
    >>> import numpy as np
    >>> class ById(Reranker):
    ...     def score(self, user_texts, item_texts):
    ...         return np.array([float(t) for t in item_texts], dtype=np.float32)
    >>> ids = np.array([[1, 3, 2, -1]])
    >>> scores, new_ids = ById().rerank(["u"], ids, np.zeros((1, 4)), ["0", "1", "2", "3"])
    >>> new_ids.tolist(), scores.tolist()
    ([[3, 2, 1, -1]], [[3.0, 2.0, 1.0, 0.0]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


def _check_candidates(user_texts: Sequence[str], cand_ids: np.ndarray, cand_scores: np.ndarray) -> None:
    if cand_ids.ndim != 2:
        raise ValueError(f"cand_ids must be 2-D (n_users, K), got shape {cand_ids.shape}")
    if cand_scores.shape != cand_ids.shape:
        raise ValueError(f"cand_scores shape {cand_scores.shape} != cand_ids shape {cand_ids.shape}")
    if len(user_texts) != cand_ids.shape[0]:
        raise ValueError(f"{len(user_texts)} user texts for {cand_ids.shape[0]} candidate rows")


class Reranker(ABC):
    """Scores (user text, item text) pairs; higher means more relevant."""

    @abstractmethod
    def score(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        """One float32 score per pair ``(user_texts[i], item_texts[i])``; returns shape ``(len(user_texts),)``."""

    def rerank(
        self,
        user_texts: Sequence[str],
        cand_ids: np.ndarray,
        cand_scores: np.ndarray,
        item_texts: Sequence[str],
        depth: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rerank the first ``depth`` candidates of every row by :meth:`score`.

        Args:
            user_texts: one text per row of ``cand_ids``.
            cand_ids: ``(n, K)`` int64 item ids, best first, ``-1`` for missing.
            cand_scores: ``(n, K)`` retriever scores aligned with ``cand_ids``.
            item_texts: catalog texts, position = item id.
            depth: rerank the first ``depth`` columns (None = all ``K``).

        Returns:
            ``(scores, ids)``, both ``(n, K)``: float32 and int64. Each row holds the reranked candidates
            sorted by new score (descending, ties in retriever order), then the candidates beyond ``depth``
            in retriever order with their retriever scores, then the ``-1`` pads with their input scores.
        """
        ids = np.asarray(cand_ids, dtype=np.int64)
        old = np.asarray(cand_scores, dtype=np.float32)
        _check_candidates(user_texts, ids, old)
        n, k = ids.shape
        depth = k if depth is None else min(int(depth), k)
        if depth < 0:
            raise ValueError(f"depth={depth} must be >= 0")
        col = np.broadcast_to(np.arange(k), (n, k))  # (n, K)
        valid = ids >= 0
        head = valid & (col < depth)  # (n, K) pairs to score
        rows, cols = np.nonzero(head)
        new = old.copy()
        if len(rows):
            if ids.max() >= len(item_texts):
                raise ValueError(f"candidate id {ids.max()} outside item_texts of length {len(item_texts)}")
            # One flat call over every (user, candidate) pair: the scorer batches and sorts by length.
            pair = self.score([user_texts[r] for r in rows], [item_texts[i] for i in ids[rows, cols]])
            new[rows, cols] = np.asarray(pair, dtype=np.float32).reshape(-1)
        group = np.where(head, 0, np.where(valid, 1, 2))  # reranked, then tail, then pads
        within = np.where(head, -new, 0.0)  # descending new score inside the reranked group
        order = np.lexsort((col, within, group), axis=1)  # last key is primary; col keeps ties stable
        return np.take_along_axis(new, order, 1), np.take_along_axis(ids, order, 1)


class IdentityReranker(Reranker):
    """The no-op baseline: the retriever's order and scores, unchanged.

    :meth:`score` is a constant (0), and :meth:`Reranker.rerank` breaks ties in retriever order, so the
    output equals the input.
    """

    def score(self, user_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        if len(user_texts) != len(item_texts):
            raise ValueError(f"{len(user_texts)} user texts for {len(item_texts)} item texts")
        return np.zeros(len(user_texts), dtype=np.float32)
