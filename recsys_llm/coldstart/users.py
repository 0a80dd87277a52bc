"""New users: recommendations for someone the run has never seen, from a few items and/or a sentence.

The user is represented exactly as known users are (:class:`recsys_llm.recommend.Server`): with the run's
chosen user model (pooling over the items' fine-tuned embeddings, or the items' titles rendered and encoded)
plus, when given, the free-text description encoded by the fine-tuned user tower; the collaborative part of
the hybrid adds what users who liked the same items liked. Nothing is trained or written: a new user costs
one encoder call.

Example:
    >>> recommend_new_user("runs/demo", items=["1", "50"])                               # doctest: +SKIP
    >>> recommend_new_user("runs/demo", text="slow-burning Scandinavian crime dramas")  # doctest: +SKIP
    >>> recommend_new_user("runs/demo", items=["260"], text="but funnier", k=5)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.data.ids import IdMap, normalise_external

logger = logging.getLogger(__name__)


def item_ids_to_internal(catalog: pd.DataFrame, item_ids: Sequence[str], source: str = "items") -> np.ndarray:
    """Internal ids of external item ids, in order; unknown ids are an error naming them."""
    external = normalise_external(pd.Series(list(item_ids), dtype=object))
    ids = IdMap(catalog["item_id"].astype(str).to_numpy(dtype=object)).to_internal(external)
    if (ids < 0).any():
        sample = ", ".join(catalog["item_id"].astype(str).head(3))
        raise ValueError(f"{source}: item ids not in the catalog: {external[ids < 0].tolist()[:5]} (ids look like "
                         f"{sample}); add new items first with `recsys-llm coldstart add-items`")
    return ids.astype(np.int64)


def recommend_new_user(run_dir: str | Path, items: Sequence[str] | None = None, text: str | None = None,
                       k: int = 10) -> pd.DataFrame:
    """Top-``k`` items for a new user known by 1-3 (or more) items and/or a free-text taste description.

    Args:
        run_dir: a trained run (encoder, embeddings and index; the hybrid is used when fitted).
        items: external item ids the user liked, oldest first; never recommended back.
        text: a description of their taste ("space operas with strong female leads").
        k: list length.

    Returns:
        The same columns as :func:`recsys_llm.recommend.recommend` (``because`` names the given item each
        recommendation is closest to; empty for a text-only user).

    Raises:
        ValueError: neither items nor text, an unknown item id, repeated ids, or ``k < 1``.
    """
    from recsys_llm.recommend import Server

    if k < 1:
        raise ValueError(f"k={k}; ask for at least one recommendation")
    items = [] if items is None else list(items)
    if not items and not (text or "").strip():
        raise ValueError("a new user needs --items (1-3 item ids they liked) and/or --text (their taste in words)")
    if len(set(map(str, items))) != len(items):
        raise ValueError(f"items: ids repeated in {items}; give each item once")
    server = Server.load(run_dir)
    hist = item_ids_to_internal(server.catalog, items) if items else np.empty(0, dtype=np.int64)
    ids, scores, stage = server.score(hist, text, k, exclude=hist)
    logger.info("new user (%d items, %s): %d recommendations from %s", len(hist),
                "text" if (text or "").strip() else "no text", len(ids), stage)
    return server.table(ids, scores, stage, hist)
