"""The hybrid: dense text scores fused with a collaborative item-item model (:mod:`recsys_llm.hybrid.model`,
the collaborative source in :mod:`recsys_llm.hybrid.collaborative`),
and the validation search of its settings over candidate lists (:mod:`recsys_llm.hybrid.search`)."""

from __future__ import annotations

from recsys_llm.hybrid.collaborative import CF_MODELS, CollaborativeScorer, _prune_columns, fit_collaborative
from recsys_llm.hybrid.model import (
    FORMAT,
    META_FILE,
    HybridModel,
    bridge_scores,
    fuse,
    item_trust,
    ndcg_at,
    select_weight,
    text_neighbours,
    trust_key,
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
    "trust_key",
    "ndcg_at",
    "select_weight",
    "text_neighbours",
    "zscore_rows",
]
