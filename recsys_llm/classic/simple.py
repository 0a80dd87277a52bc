"""The floor every model must clear: uniform random scores and most-popular (true interaction counts)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from recsys_llm.baselines import popularity_scores
from recsys_llm.classic.base import Recommender

__all__ = ["PopularityRecommender", "RandomRecommender"]


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

    def _params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _fit(self, users, items, train, item_texts, valid) -> None:
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

    def _fit(self, users, items, train, item_texts, valid) -> None:
        self.item_scores_ = popularity_scores(train, self.n_items)  # (items,) float32

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(users), self.n_items)).copy()  # (users, items)
