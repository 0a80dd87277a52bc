"""A ranked list as the CLI and the service hand it out: the top k (:func:`top_k`), then records with titles and
"because you liked ...".

:class:`Listing` is one query's ranked ids before formatting; :func:`listing_rows` makes the records the service
answers (plain Python values, no pandas: a frame costs ~1 ms a request), :func:`records_frame` the table the
CLI and the Python API return (:meth:`Recommender.recommend <recsys_llm.serve.Recommender.recommend>`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from recsys_llm.rerank.explain import because
from recsys_llm.serve.catalogue import LiveCatalogue

COLUMNS = ("rank", "item", "item_id", "title", "score", "stage", "because_item_id", "because", "because_similarity")
"""The columns of a recommendation table (the keys of each record)."""
DTYPES = {"rank": np.int64, "item": np.int64, "score": np.float32, "because_similarity": np.float32}


class Listing(NamedTuple):
    """One query's ranked list before it becomes records or a table."""

    ids: np.ndarray  # (k,) item ids, -1 padding
    scores: np.ndarray  # (k,)
    history: np.ndarray  # what "because you liked" draws from
    stage: str


def top_k(scores: np.ndarray, pool: np.ndarray, exclude: np.ndarray, k: int, tie_rank: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``pool`` minus ``exclude`` by ``scores``, ties by ``tie_rank`` (item id -> position in
    the run's seeded tie order): ``(ids, float32 scores)``."""
    pool = pool[~np.isin(pool, exclude)] if len(exclude) else pool
    s = scores[pool]
    if len(pool) > k:
        kth = np.partition(-s, k - 1)[k - 1]
        pool, s = pool[-s <= kth], s[-s <= kth]  # every item tied with the k-th stays in
    order = np.lexsort((tie_rank[pool], -s))[:k]
    return pool[order], s[order].astype(np.float32)


def listing_rows(catalogue: LiveCatalogue, listing: Listing) -> list[dict[str, Any]]:
    """Records of :data:`COLUMNS`; padding is dropped, ``because_similarity`` is NaN (and ``because_item_id``
    empty) where the history explains nothing (:func:`~recsys_llm.rerank.explain.because`)."""
    keep = listing.ids >= 0
    ids, scores = listing.ids[keep], listing.scores[keep]
    why, sim = because(catalogue.vectors, listing.history, ids)
    external, titles = catalogue.idmap.external, catalogue.titles
    return [{"rank": r, "item": i, "item_id": external[i], "title": titles[i], "score": sc, "stage": listing.stage,
             "because_item_id": external[w] if w >= 0 else "", "because": titles[w] if w >= 0 else "",
             "because_similarity": si}
            for r, (i, sc, w, si) in enumerate(zip(ids.tolist(), scores.astype(np.float32).tolist(), why.tolist(),
                                                   sim.tolist(), strict=True), start=1)]


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The records as a frame with :data:`COLUMNS` and their dtypes (empty rows: an empty frame)."""
    return pd.DataFrame({c: np.asarray([r[c] for r in rows], dtype=DTYPES.get(c, object)) for c in COLUMNS})
