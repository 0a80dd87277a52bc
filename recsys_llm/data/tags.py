"""Item tags from the training period only: what a model may read about an item when it is trained.

User tags (MovieLens ``tags.csv``) are written at a time by a user, like interactions. Built from every row,
the ``tags`` text would carry the test period (tags written after the cutoff) and the cold items' own users
(a held-out item would arrive with its future tags, and tag presence tracks popularity). :func:`training_tags`
keeps a tag row only when

* its item is not a cold item (cold items keep no tags: they are described by title and genres alone), and
* its user has training interactions and the row is no later than that user's last training interaction
  (for a temporal split that is before the validation cutoff; for leave-last-out, before the user's held-out
  items). Rows of users without training interactions are dropped; rows without a timestamp are dropped too
  (their period is unknown), with a warning.

Example:
    >>> ds.items["tags"] = training_tags(ds, split)     # doctest: +SKIP   (stages/prepare.py does this)
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys_llm.data.movielens import tag_text
from recsys_llm.data.schema import Dataset
from recsys_llm.data.splits import Split

__all__ = ["training_tags"]

logger = logging.getLogger(__name__)


def training_tags(ds: Dataset, split: Split) -> pd.Series:
    """The ``tags`` column rebuilt from the training period's tag rows (module docstring); ``ds.items["tags"]``
    unchanged when the data set has no tag rows."""
    rows = ds.tag_rows
    if rows is None:
        return ds.items["tags"] if "tags" in ds.items else pd.Series([""] * ds.n_items)
    last = np.full(ds.n_users, np.iinfo(np.int64).min, dtype=np.int64)  # per user: last training timestamp
    np.maximum.at(last, split.train["user"].to_numpy(np.int64), split.train["timestamp"].to_numpy(np.int64))
    item, user, ts = (rows[c].to_numpy(np.int64) for c in ("item", "user", "timestamp"))
    cold = np.zeros(ds.n_items, dtype=bool)
    cold[np.asarray(split.cold_items, dtype=np.int64)] = True
    if (ts < 0).any():
        logger.warning("%d tag rows have no timestamp: their period is unknown, so they are not used", (ts < 0).sum())
    known = (user >= 0) & (ts >= 0)
    keep = ~cold[item] & known
    keep[known] &= ts[known] <= last[user[known]]
    logger.info("tags: %d of %d tag rows are from the training period of warm items", keep.sum(), len(rows))
    return tag_text(rows.loc[keep], ds.n_items)
