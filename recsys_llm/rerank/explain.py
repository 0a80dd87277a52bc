"""Explanations: for each recommended item, the item of the user's history it is most similar to.

"Because you liked X" is the history item whose fine-tuned embedding has the highest cosine similarity with
the recommended item's embedding (embeddings are L2-normalised, so cosine = inner product). It explains the
list whichever stage ordered it (retrieval or rerank): the similarity is a property of the item pair, the
same vectors the retriever searched with.

Example:
    >>> import numpy as np
    >>> vecs = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    >>> because(vecs, history=np.array([0, 1]), rec_ids=np.array([2, -1]))
    (array([ 0, -1]), array([0.8, nan], dtype=float32))
"""

from __future__ import annotations

import numpy as np


def because(item_vectors: np.ndarray, history: np.ndarray, rec_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most similar history item for each recommended item.

    Args:
        item_vectors: ``(n_items, dim)`` L2-normalised item embeddings, row = item id.
        history: ``(h,)`` item ids the user interacted with.
        rec_ids: ``(k,)`` recommended item ids; ``-1`` (padding) gets no explanation.

    Returns:
        ``(because_ids, similarity)``: int64 ``(k,)`` history item ids (``-1`` where there is none) and
        float32 ``(k,)`` cosine similarities (NaN where there is none).

    Raises:
        ValueError: an id outside ``item_vectors``.
    """
    history = np.asarray(history, dtype=np.int64).reshape(-1)
    rec_ids = np.asarray(rec_ids, dtype=np.int64).reshape(-1)
    n = len(item_vectors)
    for name, ids in (("history", history), ("rec_ids", rec_ids[rec_ids >= 0])):
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{name}: item ids must lie in [0, {n}), got {ids.min()}..{ids.max()}")
    out_ids = np.full(len(rec_ids), -1, dtype=np.int64)
    out_sim = np.full(len(rec_ids), np.nan, dtype=np.float32)
    real = rec_ids >= 0
    if not len(history) or not real.any():
        return out_ids, out_sim
    sims = item_vectors[rec_ids[real]] @ item_vectors[history].T  # (k', h)
    best = sims.argmax(axis=1)
    out_ids[real] = history[best]
    out_sim[real] = sims[np.arange(len(best)), best]
    return out_ids, out_sim
