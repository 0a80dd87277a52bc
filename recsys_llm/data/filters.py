"""Filters applied to every loader's interactions, in this order, before users are mapped.

1. :func:`drop_duplicates`: exact duplicates (same user, item and timestamp) are always dropped and counted
   (``duplicate_interaction`` in ``Dataset.dropped``): one event recorded twice would otherwise be able to
   serve as both a user's validation and test interaction.
2. :func:`min_rating`: ``data.min_rating`` keeps ratings >= the value.
3. :func:`k_core`: ``data.min_user_interactions`` / ``data.min_item_interactions`` remove users and items with
   fewer interactions, repeated until nothing changes (removing an item can push a user under the bar).
4. :func:`prune_catalog`: for loaders whose catalog is "the items in the data" (review dumps), and whenever
   ``data.min_item_interactions`` > 1 (a k-core over items removes them), items left without interactions leave
   the catalog and item ids are renumbered (items with no interaction in the data at all, description-only new
   items, stay in a catalog that is not "the items in the data").

A filter that leaves nothing raises a :class:`DataError` naming the filter and its value.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys_llm.data.checks import BadRows, DataError

logger = logging.getLogger(__name__)


def drop_duplicates(inter: pd.DataFrame, users: np.ndarray, problems: BadRows, file: str) -> np.ndarray:
    """(n,) bool keep mask: the first of each exact (user, item, timestamp) duplicate, counted when dropped."""
    key = pd.DataFrame({"u": users, "i": inter["item"].to_numpy(), "t": inter["timestamp"].to_numpy()})
    dup = key.duplicated(keep="first").to_numpy()
    problems.count(file, "row", "duplicate_interaction", int(dup.sum()))
    return ~dup


def min_rating(inter: pd.DataFrame, value: float | None, file: str) -> np.ndarray:
    """(n,) bool keep mask of ``rating >= value`` (all True when ``value`` is None)."""
    if value is None:
        return np.ones(len(inter), dtype=bool)
    ratings = inter["rating"].to_numpy()
    if np.isnan(ratings).all():
        raise DataError(f"{file}: data.min_rating={value} needs ratings, but the data has none; unset min_rating")
    keep = ratings >= value
    if not keep.any():
        raise DataError(f"{file}: no interactions left after the filter data.min_rating={value} (the highest "
                        f"rating is {np.nanmax(ratings):g}); lower data.min_rating or unset it")
    logger.info("min_rating=%s: kept %d of %d interactions (removed %d)", value, keep.sum(), len(keep), (~keep).sum())
    return keep


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int, file: str) -> np.ndarray:
    """(n,) bool keep mask: users with >= ``min_user`` and items with >= ``min_item`` kept rows, iterated to a fixpoint.

    Example:
        >>> k_core(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 0, 0, 1]), 2, 2, "x").tolist()
        [True, True, False, True, True]
    """
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep
    rounds = 0
    while True:
        u_count = np.bincount(users[keep], minlength=int(users.max()) + 1)
        i_count = np.bincount(items[keep], minlength=int(items.max()) + 1)
        bad = keep & ((u_count[users] < min_user) | (i_count[items] < min_item))
        if not bad.any():
            break
        keep &= ~bad
        rounds += 1
    if not keep.any():
        raise DataError(
            f"{file}: no interactions left after the k-core filter data.min_user_interactions={min_user}, "
            f"data.min_item_interactions={min_item} ({len(keep)} before); lower them"
        )
    logger.info("k-core (users >= %d, items >= %d interactions): kept %d of %d interactions after %d round(s)",
                min_user, min_item, keep.sum(), len(keep), rounds)
    return keep


def prune_catalog(items: pd.DataFrame, inter_items: np.ndarray, spare: np.ndarray | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep only catalog items with interactions (and those ``spare`` marks); returns the renumbered catalog and the
    remapped item column."""
    used = np.zeros(len(items), dtype=bool) if spare is None else spare.copy()
    used[inter_items] = True
    if used.all():
        return items, inter_items
    new_id = np.cumsum(used) - 1  # (n_items,) old position -> new position (valid where used)
    logger.info("catalog: kept the %d of %d items that have interactions", used.sum(), len(used))
    kept = items.loc[used].reset_index(drop=True)
    kept["item"] = np.arange(len(kept), dtype=np.int64)
    return kept, new_id[inter_items].astype(np.int64)
