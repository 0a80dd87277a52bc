"""Classic recommender baselines behind one small contract (`Recommender`), and their tuning on validation.

Models, by `Recommender.name`: ``random``, ``popularity`` (`simple`), ``itemknn`` (`knn`), ``ease`` and
``ease_recency`` (EASE with a recency-weighted query, `ease`), ``bm25`` (item text, `bm25`) and ``sasrec``
(self-attentive sequential model, `sasrec`). `make_baseline(name)` builds one with its default
hyper-parameters; `recsys_llm.classic.tuning.tune` chooses them on validation users instead, under one budget
for every model. `recsys_llm.report.compare` evaluates them next to the neural models.

Example:
    >>> model = EASE(l2=100.0).fit(train, n_users, n_items)  # doctest: +SKIP
    >>> scores, ids = model.recommend(users, histories, k=10, seen=histories)  # doctest: +SKIP
"""

from __future__ import annotations

from recsys_llm.classic.base import Recommender, Validation, query_matrix, recency_weights
from recsys_llm.classic.bm25 import BM25Recommender
from recsys_llm.classic.ease import EASE, RecencyEASE
from recsys_llm.classic.knn import ItemKNN
from recsys_llm.classic.sasrec import SASRec
from recsys_llm.classic.simple import PopularityRecommender, RandomRecommender

__all__ = [
    "BASELINES",
    "EASE",
    "BM25Recommender",
    "ItemKNN",
    "PopularityRecommender",
    "RandomRecommender",
    "RecencyEASE",
    "Recommender",
    "SASRec",
    "Validation",
    "make_baseline",
    "query_matrix",
    "recency_weights",
]

BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (RandomRecommender, PopularityRecommender, ItemKNN, EASE, RecencyEASE, BM25Recommender, SASRec)
}


def make_baseline(name: str, seed: int = 0) -> Recommender:
    """A baseline with its default hyper-parameters, by `Recommender.name`.

    Args:
        name: one of ``random``, ``popularity``, ``itemknn``, ``ease``, ``ease_recency``, ``bm25``, ``sasrec``.
        seed: the seed of the seeded baselines (``random``, ``sasrec``); the others are deterministic.

    Returns:
        An unfitted `Recommender`.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> make_baseline("ease")
        EASE(l2=500.0, max_items=30000, solver='auto')
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    cls = BASELINES[name]
    return cls(seed=seed) if cls in (RandomRecommender, SASRec) else cls()  # type: ignore[call-arg]
