"""New users: recommendations for someone the run has never seen, from a few items and/or a sentence.

The user is ranked exactly as known users are, by the run's :class:`~recsys_llm.serve.recommender.Recommender`
with its served configuration: the chosen user model (pooling over the items' fine-tuned embeddings, or the
items' titles rendered and encoded) plus, when given, the free-text description encoded by the fine-tuned user
tower; the collaborative part of the hybrid adds what users who liked the same items liked. Nothing is trained
or written. For many users, load a Recommender once and call ``recommend_new`` on it.

Example:
    >>> recommend_new_user("runs/demo", items=["1", "50"])                               # doctest: +SKIP
    >>> recommend_new_user("runs/demo", text="slow-burning Scandinavian crime dramas")  # doctest: +SKIP
    >>> recommend_new_user("runs/demo", items=["260"], text="but funnier", k=5)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recsys_llm.serve.recommender import Recommender

logger = logging.getLogger(__name__)


def recommend_new_user(run_dir: str | Path, items: Sequence[str] | None = None, text: str | None = None,
                       k: int = 10) -> pd.DataFrame:
    """Top-``k`` items for a new user known by 1-3 (or more) items and/or a free-text taste description.

    Args:
        run_dir: a trained run (encoder, embeddings and index; the hybrid is used when served).
        items: external item ids the user liked, oldest first; never recommended back.
        text: a description of their taste ("space operas with strong female leads").
        k: list length.

    Returns:
        The columns of :meth:`recsys_llm.serve.recommender.Recommender.table` (``because`` names the given item
        each recommendation is closest to; empty for a text-only user).

    Raises:
        ValueError: neither items nor text, an unknown item id, repeated ids, or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k={k}; ask for at least one recommendation")
    items = [] if items is None else [str(i) for i in items]
    if not items and not (text or "").strip():
        raise ValueError("a new user needs --items (1-3 item ids they liked) and/or --text (their taste in words)")
    recs = Recommender.load(run_dir).recommend_new(items, text, k)
    logger.info("new user (%d items, %s): %d recommendations", len(items),
                "text" if (text or "").strip() else "no text", len(recs))
    return recs
