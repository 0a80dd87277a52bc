"""How fast the hybrid trusts an item's collaborative evidence: the confidence ``c`` of ``t_i = n_i/(n_i + c)``,
checked on items that have little of it.

Warm validation barely constrains ``c``: its targets are mostly popular items, for which ``n_i >> c`` whatever
``c`` is, so it can pick a ``c`` that makes an item with a few interactions follow its noisy collaborative
score, and the hybrid falls below its own text model as cold items gain their first interactions. This module
has the pieces of the validation the few-shot curve asks about (:mod:`recsys_llm.report.fewshot`, item side),
built from training data only by :func:`recsys_llm.stages.hybrid_cold.few_shot_evidence`: a random sample of
the warm items becomes *pseudo-cold*, each keeps only its first ``r`` training interactions (``r`` drawn per
item from ``reveal``, by time: :func:`hide_beyond`), the collaborative part is refitted on what is left
(:func:`refit`), and users are ranked over the pseudo-cold items (:func:`pseudo_cold_exclusions`) for their
interactions from position ``max(reveal)`` on (:func:`from_position`), as the item-side curve ranks among the
cold items.

Example:
    >>> train_r, pseudo = hide_beyond(train, items=np.array([3, 7]), reveal=(1, 3, 5, 10, 20), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys_llm.hybrid.collaborative import CollaborativeScorer, fit_collaborative

__all__ = ["choose_confidence", "from_position", "hide_beyond", "pseudo_cold_exclusions", "refit", "within_one_se",
           "without_items"]


def _positions(train: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """``train`` ordered by (item, time), stable, and each row's 0-based position among its item's rows."""
    order = train.sort_values(["item", "timestamp"], kind="stable")
    return order, order.groupby("item").cumcount().to_numpy()


def hide_beyond(train: pd.DataFrame, items: np.ndarray, reveal: Sequence[int], seed: int = 0
                ) -> tuple[pd.DataFrame, dict[int, int]]:
    """``train`` with each of ``items`` cut to its first ``r`` interactions by time (``r`` drawn per item from
    ``reveal``); returns the cut frame and ``{item: r}``."""
    rng = np.random.default_rng(seed)
    items = np.unique(np.asarray(items, dtype=np.int64))
    r = dict(zip(items.tolist(), rng.choice(np.asarray(reveal, dtype=np.int64), len(items)).tolist(), strict=True))
    order, position = _positions(train)
    limit = order["item"].map(r).to_numpy()  # NaN for items that stay warm
    keep = np.isnan(limit) | (position < np.nan_to_num(limit))
    return order.loc[keep].sort_index(), r


def from_position(train: pd.DataFrame, items: np.ndarray, start: int) -> pd.DataFrame:
    """The interactions of ``items`` from their ``start``-th on (0-based, by time): the few-shot targets, the same
    whatever was revealed before them (as the item-side curve of :mod:`recsys_llm.report.fewshot`)."""
    order, position = _positions(train)
    mine = np.isin(order["item"].to_numpy(dtype=np.int64), np.asarray(items, dtype=np.int64))
    return order.loc[mine & (position >= start)].sort_index()


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


def choose_confidence(warm: dict, few: dict, tolerance: float = 0.0):
    """The confidence for items with few interactions that costs warm users nothing measurable: among the
    confidences whose warm validation NDCG@10 (per-user values ``warm[c]``, paired across ``c``) is within one
    standard error of the paired difference from the warm best, or below it by at most ``tolerance`` times the
    warm best's mean, the one with the best few-shot validation ``few[c]``; ties: the smaller ``c``. The keys may
    be any ordered values, e.g. ``(confidence, power)``.

    Warm users are most of the traffic and their validation is the less noisy one, so they keep the say: a
    confidence that helps the few-shot regime is taken only where warm validation cannot tell it from the best.
    (Weighting the two equally let a wide few-shot range outvote a real warm loss: on ml-100k it chose ``c = 200``
    for +0.22 few-shot and cost warm test users 0.0126 NDCG@10 against recency EASE.) The ``tolerance`` is for
    losses too small to matter that the paired test still calls real: when a curve changes the ranking of only
    a few warm users, two of 943 losing a little is "more than one standard error" (on the ml-100k cold-start
    recipe a loss of 0.00004, 0.03%, kept the few-shot curve from +0.065 on its validation).

    >>> warm = {0: np.array([0.5, 0.5, 0.5, 0.5]), 50: np.array([0.5, 0.5, 0.49, 0.49])}
    >>> choose_confidence(warm, {0: 0.1, 50: 0.3}), choose_confidence(warm, {0: 0.1, 50: 0.3}, tolerance=0.02)
    (0, 50)
    """
    means = {c: float(np.mean(v)) if len(v) else float("nan") for c, v in warm.items()}
    best = max(sorted(means), key=lambda c: means[c])  # the first (smallest) of equal means
    floor = means[best] * (1.0 - tolerance)
    return max((c for c in sorted(warm) if c == best or within_one_se(warm[best], warm[c]) or means[c] >= floor),
               key=lambda c: few[c])


def within_one_se(best: np.ndarray, other: np.ndarray) -> bool:
    """``other``'s per-user values are within one standard error of ``best``'s: the mean of the paired difference
    ``best - other`` is at most its standard error (never with fewer than 2 users). The test of the
    one-standard-error rules of the hybrid stage (:func:`choose_confidence`,
    :func:`recsys_llm.stages.hybrid_cold.one_se_simplest`)."""
    diff = np.asarray(best) - np.asarray(other)
    if len(diff) < 2:
        return False
    return float(diff.mean()) <= float(diff.std(ddof=1)) / np.sqrt(len(diff))
