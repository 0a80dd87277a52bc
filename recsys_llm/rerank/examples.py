"""Reranker training examples: each user text with its true next item and hard negatives from the retriever.

A hard negative is an item the retriever ranked high for that text but the user never interacted with, so
the cross-encoder learns to separate exactly what the retriever confuses.

Example:
    >>> from recsys_llm.config import RerankConfig
    >>> cands = np.array([[5, 2, 7, 1, 9]])                       # the retriever's top 5 for the text
    >>> ex = build_rerank_examples(["Alien; Heat"], np.array([2]), cands, [np.array([7])],
    ...                            RerankConfig(negatives=2, skip_top=0, negative_pool=5))
    >>> ex.negatives.shape, sorted(set(ex.negatives[0]) & {2, 7})   # never the positive or a known item
    ((1, 2), [])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_llm.config import RerankConfig

__all__ = ["RerankExamples", "build_rerank_examples"]

logger = logging.getLogger(__name__)


@dataclass
class RerankExamples:
    """Training examples with named fields: ``negatives[i]`` are hard negatives for ``user_texts[i]``."""

    user_texts: list[str]
    positives: np.ndarray  # int64 (n,)
    negatives: np.ndarray  # int64 (n, N)

    def __post_init__(self) -> None:
        n = len(self.user_texts)
        if self.positives.shape != (n,) or self.negatives.ndim != 2 or self.negatives.shape[0] != n:
            raise ValueError(f"{n} user texts, positives {self.positives.shape}, negatives "
                             f"{self.negatives.shape}: need (n,) and (n, N)")


def _random_items(rng: np.random.Generator, n_items: int, k: int, banned: np.ndarray) -> np.ndarray:
    """``k`` distinct ids in ``[0, n_items)`` outside ``banned``, uniformly at random."""
    free = np.setdiff1d(np.arange(n_items, dtype=np.int64), banned)
    if len(free) < k:
        raise ValueError(f"only {len(free)} catalog items are not excluded; cannot draw {k} negatives")
    return rng.choice(free, size=k, replace=False)


def build_rerank_examples(user_texts: Sequence[str], positives: np.ndarray, candidate_ids: np.ndarray,
                          exclude: Sequence[np.ndarray], cfg: RerankConfig, seed: int = 0,
                          n_items: int | None = None) -> RerankExamples:
    """Draw ``cfg.negatives`` hard negatives per example from the retriever's candidates.

    Negatives are drawn uniformly without replacement from ``candidate_ids[i, skip_top:negative_pool]``
    after removing ``-1``, the positive and every id in ``exclude[i]`` (the user's known items: no false
    negatives). A row with too few eligible candidates keeps all of them and is topped up with random
    catalog items that are neither excluded nor the positive; the number of such rows is logged.

    Args:
        user_texts: ``n`` user texts.
        positives: ``(n,)`` int64 true next items.
        candidate_ids: ``(n, pool)`` int64 retriever candidates for each text, best first, ``-1`` padded.
        exclude: ``n`` arrays of ids that must not be negatives.
        cfg: ``negatives``, ``skip_top`` and ``negative_pool`` are used.
        seed: seed of the draw.
        n_items: catalog size for top-ups; None takes the largest id seen + 1.

    Returns:
        :class:`RerankExamples` with ``negatives`` of shape ``(n, cfg.negatives)``.
    """
    positives = np.asarray(positives, dtype=np.int64).reshape(-1)
    cands = np.asarray(candidate_ids, dtype=np.int64)
    n = len(user_texts)
    if cands.ndim != 2 or cands.shape[0] != n or len(positives) != n or len(exclude) != n:
        raise ValueError(f"{n} user texts, positives {positives.shape}, candidate_ids {cands.shape}, "
                         f"{len(exclude)} exclude arrays: need n, (n,), (n, pool) and n")
    if n_items is None:
        n_items = 1 + max([int(cands.max(initial=-1)), int(positives.max(initial=-1))]
                          + [int(np.max(e)) for e in exclude if len(e)])
    rng = np.random.default_rng(seed)
    k = cfg.negatives
    pool = cands[:, cfg.skip_top : cfg.negative_pool]  # (n, pool')
    negatives = np.empty((n, k), dtype=np.int64)
    topped = 0
    for i in range(n):
        banned = np.append(np.asarray(exclude[i], dtype=np.int64), positives[i])
        row = pool[i]
        eligible = np.unique(row[(row >= 0) & ~np.isin(row, banned)])
        if len(eligible) >= k:
            negatives[i] = rng.choice(eligible, size=k, replace=False)
        else:
            topped += 1
            extra = _random_items(rng, n_items, k - len(eligible), np.concatenate([banned, eligible]))
            negatives[i] = np.concatenate([eligible, extra])
    if topped:
        logger.info("%d of %d rerank examples had fewer than %d eligible hard negatives; topped up with "
                    "random catalog items", topped, n, k)
    return RerankExamples(list(user_texts), positives, negatives)
