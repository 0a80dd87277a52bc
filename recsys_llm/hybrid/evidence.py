"""How fast the hybrid trusts an item's collaborative evidence: the confidence ``c`` of ``t_i = n_i/(n_i + c)``,
checked on items that have little of it.

Warm validation barely constrains ``c``: its targets are mostly popular items, for which ``n_i >> c`` whatever
``c`` is, so it can pick a large ``c`` that leaves an item with 20 interactions at a quarter of the
collaborative weight, and the hybrid falls behind EASE as cold items gain interactions. This module builds the
validation the few-shot curve asks about (:mod:`recsys_llm.report.fewshot`, item side), from training data
only: the validation users' validation items become *pseudo-cold*, each keeps only its first ``r`` training
interactions (``r`` drawn per item from ``reveal``, by time), the collaborative model is refitted on what is
left, and each user's validation item is ranked among the pseudo-cold items (everything the user is known to
have done filtered), as the item-side curve ranks among cold items.

Example:
    >>> train_r, pseudo = hide_beyond(train, items=np.array([3, 7]), reveal=(1, 3, 5, 10, 20), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys_llm.hybrid.collaborative import CollaborativeScorer, fit_collaborative

__all__ = ["choose_confidence", "hide_beyond", "pseudo_cold_exclusions", "refit", "without_items"]


def hide_beyond(train: pd.DataFrame, items: np.ndarray, reveal: Sequence[int], seed: int = 0
                ) -> tuple[pd.DataFrame, dict[int, int]]:
    """``train`` with each of ``items`` cut to its first ``r`` interactions by time (``r`` drawn per item from
    ``reveal``); returns the cut frame and ``{item: r}``."""
    rng = np.random.default_rng(seed)
    items = np.unique(np.asarray(items, dtype=np.int64))
    r = dict(zip(items.tolist(), rng.choice(np.asarray(reveal, dtype=np.int64), len(items)).tolist(), strict=True))
    order = train.sort_values(["item", "timestamp"], kind="stable")
    position = order.groupby("item").cumcount().to_numpy()
    limit = order["item"].map(r).to_numpy()  # NaN for items that stay warm
    keep = np.isnan(limit) | (position < np.nan_to_num(limit))
    return order.loc[keep].sort_index(), r


def without_items(train: pd.DataFrame, items: np.ndarray) -> pd.DataFrame:
    """``train`` without any interaction of ``items``: they become pseudo-cold, with no collaborative evidence
    at all (the all-items-cold validation of the bridge, :func:`recsys_llm.stages.hybrid.cold_refit`)."""
    return train.loc[~np.isin(train["item"].to_numpy(dtype=np.int64), np.asarray(items, dtype=np.int64))]


def refit(cf: CollaborativeScorer, model, train: pd.DataFrame, n_users: int, n_items: int) -> CollaborativeScorer:
    """The collaborative part ``cf`` refitted on ``train`` with the setting ``model`` (the tuned baseline it came
    from) was fitted with: no new search."""
    return fit_collaborative(cf.name, train, n_users, n_items, fitted=model.with_params().fit(train, n_users, n_items))


def pseudo_cold_exclusions(hist: Sequence[np.ndarray], pseudo: np.ndarray, n_items: int) -> list[np.ndarray]:
    """Per user: every item outside ``pseudo`` plus the user's own history (ranking among the pseudo-cold
    items, known items filtered)."""
    outside = np.setdiff1d(np.arange(n_items), pseudo)
    return [np.union1d(outside, h) for h in hist]


def choose_confidence(warm: dict[float, float], few: dict[float, float]) -> float:
    """The confidence with the best warm + few-shot validation NDCG@10, each relative to its best (equal
    weight, as :func:`recsys_llm.stages.hybrid.better_user_model`); ties: the smaller ``c``."""
    top_w, top_f = max(warm.values()) or 1.0, max(few.values()) or 1.0
    return max(warm, key=lambda c: (warm[c] / top_w + few[c] / top_f, -c))
