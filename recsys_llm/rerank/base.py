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

    def score_candidates(self, user_texts: Sequence[str], cand_ids: np.ndarray, item_texts: Sequence[str],
                         depth: int | None = None) -> np.ndarray:
        """Reranker scores of the first ``depth`` real candidates of every row, NaN elsewhere.

        One flat :meth:`score` call covers every (user, candidate) pair, so the scorer can batch pairs of
        similar length across users.

        Returns:
            float32 ``(n, K)`` aligned with ``cand_ids``.
        """
        ids = np.asarray(cand_ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"cand_ids must be 2-D (n_users, K), got shape {ids.shape}")
        if len(user_texts) != ids.shape[0]:
            raise ValueError(f"{len(user_texts)} user texts for {ids.shape[0]} candidate rows")
        depth = _depth(depth, ids.shape[1])
        head = (ids >= 0) & (np.arange(ids.shape[1]) < depth)  # (n, K) pairs to score
        rows, cols = np.nonzero(head)
        out = np.full(ids.shape, np.nan, dtype=np.float32)
        if len(rows):
            if ids.max() >= len(item_texts):
                raise ValueError(f"candidate id {ids.max()} outside item_texts of length {len(item_texts)}")
            items = ids[rows, cols].tolist()
            pair = self.score([user_texts[r] for r in rows.tolist()], [item_texts[i] for i in items])
            out[rows, cols] = np.asarray(pair, dtype=np.float32).reshape(-1)
        return out

    def rerank(
        self,
        user_texts: Sequence[str],
        cand_ids: np.ndarray,
        cand_scores: np.ndarray,
        item_texts: Sequence[str],
        depth: int | None = None,
        weight: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rerank the first ``depth`` candidates of every row by :meth:`score` (fused with ``weight`` < 1).

        Args:
            user_texts: one text per row of ``cand_ids``.
            cand_ids: ``(n, K)`` int64 item ids, best first, ``-1`` for missing.
            cand_scores: ``(n, K)`` retriever scores aligned with ``cand_ids``.
            item_texts: catalog texts, position = item id.
            depth: rerank the first ``depth`` columns (None = all ``K``).
            weight: share of the reranker in the fused score (see :func:`reorder`); 1 = reranker alone.

        Returns:
            ``(scores, ids)``, both ``(n, K)``: float32 and int64. Each row holds the reranked candidates
            sorted by new score (descending, ties in retriever order), then the candidates beyond ``depth``
            in retriever order with their retriever scores, then the ``-1`` pads with their input scores.
        """
        _check_candidates(user_texts, np.asarray(cand_ids), np.asarray(cand_scores))
        ce = self.score_candidates(user_texts, cand_ids, item_texts, depth)
        return reorder(cand_ids, cand_scores, ce, depth, weight)


def _depth(depth: int | None, k: int) -> int:
    depth = k if depth is None else int(depth)
    if depth < 0:
        raise ValueError(f"depth={depth} must be >= 0")
    return min(depth, k)


def _zscore(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row standardisation over ``mask``ed entries (0 where a row's scores are all equal)."""
    cnt = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mean = np.where(mask, x, 0.0).sum(axis=1, keepdims=True) / cnt
    std = np.sqrt(np.where(mask, (x - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / cnt)
    return np.where(mask, (x - mean) / np.where(std > 0, std, 1.0), 0.0)


def reorder(cand_ids: np.ndarray, cand_scores: np.ndarray, rerank_scores: np.ndarray, depth: int | None = None,
            weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the first ``depth`` real candidates of every row by reranker score, fused with retrieval.

    With ``weight == 1`` the head is sorted by the reranker score alone and carries it. Below 1 both scores
    are standardised within the row's head (z-scores) and the head is sorted by
    ``(1 - weight) * z(retrieval) + weight * z(reranker)``, which it then carries; ``weight == 0`` gives
    the retriever's order back. Candidates beyond ``depth`` follow in retriever order with their retriever
    scores, and ``-1`` pads come last. Scoring once at the largest depth and calling this per (depth,
    weight) gives a whole sweep without scoring again.

    Args:
        cand_ids: ``(n, K)`` int64, best first, ``-1`` for missing.
        cand_scores: ``(n, K)`` retriever scores.
        rerank_scores: ``(n, K)`` reranker scores; every real candidate of the first ``depth`` columns needs
            a finite one (:meth:`Reranker.score_candidates` at a depth at least as large).
        depth: columns to rerank (None = all).
        weight: in [0, 1].

    Returns:
        ``(scores, ids)`` float32 and int64, ``(n, K)``.
    """
    ids = np.asarray(cand_ids, dtype=np.int64)
    old = np.asarray(cand_scores, dtype=np.float32)
    ce = np.asarray(rerank_scores, dtype=np.float32)
    if old.shape != ids.shape or ce.shape != ids.shape or ids.ndim != 2:
        raise ValueError(f"cand_ids {ids.shape}, cand_scores {old.shape} and rerank_scores {ce.shape} must be "
                         "the same (n, K)")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight={weight}: the reranker's share of the fused score, in [0, 1]")
    n, k = ids.shape
    depth = _depth(depth, k)
    col = np.broadcast_to(np.arange(k), (n, k))  # (n, K)
    valid = ids >= 0
    head = valid & (col < depth)
    if not np.isfinite(ce[head]).all():
        raise ValueError(f"rerank_scores must be finite for every real candidate of the first {depth} columns; "
                         "score at least that deep")
    if weight >= 1.0:
        fused = ce
    else:
        fused = ((1.0 - weight) * _zscore(old.astype(np.float64), head)
                 + weight * _zscore(ce.astype(np.float64), head)).astype(np.float32)
    new = np.where(head, fused, old)
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
