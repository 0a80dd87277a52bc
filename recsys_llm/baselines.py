"""Most-popular scores and the shared full-ranking helper, now in :mod:`recsys_llm.ranking`.

Kept so that ``from recsys_llm.baselines import popularity_scores, rank_items`` goes on working.
"""

from __future__ import annotations

from recsys_llm.ranking import popularity_scores, rank_items

__all__ = ["popularity_scores", "rank_items"]
