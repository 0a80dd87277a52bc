"""Input checks shared by the accuracy and the beyond-accuracy metrics (one message for each mistake)."""

from __future__ import annotations

import numpy as np


def ranked_ids(ranked: np.ndarray) -> np.ndarray:
    """``ranked`` as a 2-D int64 id matrix; ValueError naming the actual shape or dtype."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K); got shape {ranked.shape}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must hold integer item ids; got dtype {ranked.dtype}")
    return ranked.astype(np.int64, copy=False)


def cutoff(k: int, width: int) -> int:
    """Check a cut-off ``1 <= k <= width`` (the rankings' column count) and return it as an int."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if k > width:
        raise ValueError(
            f"k={k} but the rankings have only {width} columns; rank at least k items per user "
            "(pad short rows with -1)"
        )
    return int(k)
