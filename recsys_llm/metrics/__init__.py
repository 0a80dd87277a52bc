"""Ranking metrics as pure numpy functions.

:mod:`~recsys_llm.metrics.accuracy`: Recall, Precision, HitRate, NDCG, MRR and MAP at k, read off a hit matrix
(:func:`hit_matrix`); users without held-out items get ``NaN``.
:mod:`~recsys_llm.metrics.beyond_accuracy`: coverage, Gini of exposure, intra-list diversity, novelty and
average recommendation popularity, read off the ranked ids.

Example:
    >>> import numpy as np
    >>> hits, n_rel = hit_matrix(np.array([[5, 3, 9, -1]]), [np.array([3, 7])])
    >>> recall_at_k(hits, n_rel, 2), catalog_coverage(np.array([[5, 3]]), n_items=10, k=2)
    (array([0.5]), 0.2)
"""

from __future__ import annotations

from recsys_llm.metrics.accuracy import (
    AT_K,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from recsys_llm.metrics.beyond_accuracy import (
    average_recommendation_popularity,
    catalog_coverage,
    gini_exposure,
    intra_list_diversity,
    novelty,
)

__all__ = [
    "AT_K",
    "average_recommendation_popularity",
    "catalog_coverage",
    "gini_exposure",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
]
