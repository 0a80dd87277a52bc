"""Reranker validation: held-out users with the retriever's candidates, scored by NDCG@k after reranking.

The reranked lists are measured by :func:`recsys_llm.ranking.topk_metrics`, the scorer every model's
validation uses.

Example:
    >>> v = RerankValidation(["u"], [np.array([3])], np.array([[1, 3]]), np.array([[0.9, 0.5]]), k=2)
    >>> round(v.ndcg(v.cand_ids), 4), v.ndcg(np.array([[3, 1]]))   # the retriever's order, then reranked
    (0.6309, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_llm.ranking import topk_metrics
from recsys_llm.rerank.base import Reranker, reorder

__all__ = ["RerankValidation"]


@dataclass
class RerankValidation:
    """Held-out users with the retriever's candidates for them: what the reranker is validated on.

    ``cand_ids[i]`` / ``cand_scores[i]`` are the retriever's top candidates for ``user_texts[i]`` (the user's
    known items filtered), ``targets[i]`` the held-out items. The held-out item is never added to the
    candidates: a miss by the retriever stays a miss.
    """

    user_texts: list[str]
    targets: list[np.ndarray]
    cand_ids: np.ndarray  # int64 (n, K)
    cand_scores: np.ndarray  # float32 (n, K)
    k: int = 10

    def __post_init__(self) -> None:
        n = len(self.user_texts)
        self.cand_ids = np.asarray(self.cand_ids, dtype=np.int64)
        self.cand_scores = np.asarray(self.cand_scores, dtype=np.float32)
        shapes_ok = self.cand_ids.shape[0] == n and self.cand_scores.shape == self.cand_ids.shape
        if n == 0 or len(self.targets) != n or not shapes_ok:
            raise ValueError(f"rerank validation: {n} user texts, {len(self.targets)} targets, candidates "
                             f"{self.cand_ids.shape} / {self.cand_scores.shape}; need n > 0 of each")

    def ndcg(self, ranked: np.ndarray) -> float:
        """Mean NDCG@k of ranked id lists ``(n, >= k)`` against the targets (shorter lists: the rest miss)."""
        per_user = topk_metrics(np.asarray(ranked, dtype=np.int64), self.targets, self.k, ("ndcg",))
        return float(np.nanmean(per_user[f"ndcg@{self.k}"]))

    def grid(self, model: Reranker, item_texts: Sequence[str], depths: Sequence[int],
             weights: Sequence[float]) -> dict[tuple[int, float], float]:
        """Validation NDCG@k of the reranked list at every (depth, fusion weight), scored once."""
        ce = model.score_candidates(self.user_texts, self.cand_ids, item_texts, depth=max(depths))
        return {(d, w): self.ndcg(reorder(self.cand_ids, self.cand_scores, ce, d, w)[1])
                for d in depths for w in weights}
