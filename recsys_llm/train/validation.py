"""Validation of the two-tower encoder during fine-tuning: held-out users ranked over every item.

The users' texts and every item text go through the encoder being trained; the scores are then ranked and
measured by :func:`recsys_llm.ranking.embedding_ranking_metrics`, the scorer every model's validation uses.

Example:
    >>> valid = ValidationSet(["Alien; Heat"], [np.array([3])], seen=[np.array([0, 1])], k=10)
    >>> evaluate_retrieval(encoder, valid, item_texts, TextConfig())  # doctest: +SKIP
    {'recall@10': 1.0, 'ndcg@10': 0.63}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys_llm.config import TextConfig
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.ranking import embedding_ranking_metrics, mean_metrics

__all__ = ["ValidationSet", "evaluate_retrieval"]


@dataclass
class ValidationSet:
    """Held-out users scored during training by full ranking over every item, seen items filtered.

    Args:
        user_texts: ``n_users`` user (history) texts.
        targets: ``n_users`` arrays of held-out item ids.
        seen: optional ``n_users`` arrays of item ids to exclude from each ranking (the training history).
        k: cut-off of Recall@k and NDCG@k.

    Example:
        >>> v = ValidationSet(["a; b"], [np.array([3])], seen=[np.array([0, 1])])
        >>> v.k, v.targets[0].dtype
        (10, dtype('int64'))
    """

    user_texts: list[str]
    targets: list[np.ndarray]
    seen: list[np.ndarray] | None = None
    k: int = 10

    def __post_init__(self) -> None:
        self.user_texts = list(self.user_texts)
        self.targets = [np.atleast_1d(np.asarray(t, dtype=np.int64)) for t in self.targets]
        if self.seen is not None:
            self.seen = [np.atleast_1d(np.asarray(s, dtype=np.int64)) for s in self.seen]
        n = len(self.user_texts)
        if n == 0 or len(self.targets) != n or (self.seen is not None and len(self.seen) != n):
            raise ValueError(
                f"validation needs equal, non-zero numbers of user_texts ({n}), targets ({len(self.targets)})"
                f" and seen lists ({'-' if self.seen is None else len(self.seen)})"
            )
        if self.k < 1:
            raise ValueError(f"k={self.k}; must be >= 1")

    @classmethod
    def coerce(cls, valid: ValidationSet | Sequence) -> ValidationSet:
        """Accept a :class:`ValidationSet` or a tuple ``(user_texts, targets[, seen])``."""
        if isinstance(valid, ValidationSet):
            return valid
        if isinstance(valid, tuple) and len(valid) in (2, 3):
            return cls(*valid)
        raise TypeError("valid must be a ValidationSet or a tuple (user_texts, targets[, seen])")


def evaluate_retrieval(
    encoder: TwoTowerEncoder,
    valid: ValidationSet,
    item_texts: Sequence[str],
    text_cfg: TextConfig,
    batch_size: int = 128,
    user_chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k of ``valid`` by full ranking over all items (items encoded once).

    Returns:
        ``{"recall@k": float, "ndcg@k": float}``, means over users with at least one target.
    """
    item_emb = encoder.encode_items(item_texts, text_cfg.item_max_tokens, batch_size, show_progress=False)
    user_emb = encoder.encode_users(valid.user_texts, text_cfg.user_max_tokens, batch_size,
                                    show_progress=False)
    per_user = embedding_ranking_metrics(user_emb, item_emb, valid.targets, valid.k, seen=valid.seen,
                                         user_chunk=user_chunk)
    return mean_metrics(per_user)
