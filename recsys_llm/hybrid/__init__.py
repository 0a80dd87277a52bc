"""The hybrid: dense text scores fused with a collaborative item-item model (:mod:`recsys_llm.hybrid.model`),
and the validation search of its settings over candidate lists (:mod:`recsys_llm.hybrid.search`)."""

from __future__ import annotations

from recsys_llm.hybrid.model import (
    CF_MODELS,
    FORMAT,
    META_FILE,
    CollaborativeScorer,
    HybridModel,
    _prune_columns,
    bridge_scores,
    fit_collaborative,
    fuse,
    item_trust,
    ndcg_at,
    select_weight,
    text_neighbours,
    zscore_rows,
)
from recsys_llm.hybrid.search import CandidateSet, best_value, candidate_set, fused_grid

__all__ = [
    "CF_MODELS",
    "FORMAT",
    "META_FILE",
    "CandidateSet",
    "CollaborativeScorer",
    "HybridModel",
    "_prune_columns",
    "bridge_scores",
    "best_value",
    "candidate_set",
    "fit_collaborative",
    "fuse",
    "fused_grid",
    "item_trust",
    "ndcg_at",
    "select_weight",
    "text_neighbours",
    "zscore_rows",
]
