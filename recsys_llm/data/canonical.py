"""Checked tables -> the canonical catalog and interaction rows that :func:`recsys_llm.data.io.load_dataset` assembles.

Every loader ends here: :func:`canonical_catalog` maps item ids through :class:`~recsys_llm.data.ids.IdMap`
(row ``i`` of the catalog is item ``i``; empty, missing-value and repeated ids are bad rows) and
:func:`map_interactions` validates user ids, item references, timestamps and ratings of an interactions
table and maps its items to catalog positions. A loader returns both as a :class:`Loaded`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys_llm.data.checks import (
    BadRows,
    Check,
    Table,
    as_text,
    id_checks,
    missing_id,
    parse_ratings,
    parse_timestamps,
    timestamp_checks,
)
from recsys_llm.data.ids import IdMap

logger = logging.getLogger(__name__)


@dataclass
class Catalog:
    items: pd.DataFrame  # canonical items frame
    item_map: IdMap
    file: str


@dataclass
class Loaded:
    """What a loader returns: the catalog, validated interactions and the files read.

    Attributes:
        catalog: the canonical catalog.
        interactions: ``user_id`` (external), ``item`` (int64 catalog position), ``timestamp`` (int64),
            ``rating`` (float32, NaN when the source has none).
        sources: files read, the interactions file first (named in messages about the whole data set).
        interacted_only: the catalog keeps only items with interactions after every filter (review dumps,
            whose metadata lists many items nobody in the data touched); otherwise every catalog item stays.
        holdout: the data set's own split, ``user_id, valid_item_id, test_item_id`` (external ids), or None.
        tag_rows: user tags (``item_id``, ``user_id`` external, ``tag``, ``timestamp``) behind the catalog's
            ``tags`` column, or None: ``prepare`` rebuilds that column from the training period's rows only.
    """

    catalog: Catalog
    interactions: pd.DataFrame
    sources: list[str]
    interacted_only: bool = False
    holdout: pd.DataFrame | None = field(default=None)
    tag_rows: pd.DataFrame | None = field(default=None)


def canonical_catalog(table: Table, problems: BadRows) -> Catalog:
    """Catalog table with ``item_id`` + text columns -> canonical items (row i has item i); duplicates are bad rows."""
    ids = table.frame["item_id"]
    empty = missing_id(ids)
    norm = ids.astype(str).str.strip().to_numpy()
    dup = pd.Series(np.where(empty, None, norm)).duplicated(keep="first").to_numpy() & ~empty

    def duplicate(i: int) -> str:
        first = int(np.flatnonzero((norm == norm[i]) & ~empty)[0])
        return f"duplicate item id {norm[i]!r} (first at {table.unit} {table.rows[first]}); item ids must be unique"

    checks = [*id_checks(table, ("item_id",)), Check("duplicate_item", "item_id", dup, duplicate)]
    kept, _ = problems.apply(table, checks)
    item_map = IdMap.fit(kept.frame["item_id"])
    order = np.argsort(item_map.to_internal(kept.frame["item_id"]), kind="stable")
    frame = kept.frame.iloc[order].reset_index(drop=True)
    items = pd.DataFrame(
        {"item": np.arange(len(frame), dtype=np.int64), "item_id": item_map.external.astype(str)}
    )
    for col in frame.columns:
        if col != "item_id":
            items[col] = as_text(frame[col])
    return Catalog(items, item_map, table.file)


def item_refs(table: Table, catalog: Catalog) -> tuple[np.ndarray, list[Check]]:
    """Map ``item_id`` to catalog positions; empty or unknown ids are checks."""
    idx = catalog.item_map.to_internal(table.frame["item_id"])

    def unknown(i: int) -> str:
        return f"item id {table.value(i, 'item_id').strip()!r} is not in the item catalog {catalog.file}"

    return idx, [*id_checks(table, ("item_id",)), Check("unknown_item", "item_id", idx < 0, unknown)]


def map_interactions(table: Table, catalog: Catalog, problems: BadRows) -> pd.DataFrame:
    """Interactions table (user_id, item_id, optional timestamp/rating) -> validated frame with catalog positions.

    Without a timestamp column the row position is the timestamp (file order is time order).
    """
    f = table.frame
    idx, checks = item_refs(table, catalog)
    checks = [*id_checks(table, ("user_id",)), *checks]
    if "timestamp" in f:
        ts = parse_timestamps(f["timestamp"])
        if ts.milliseconds:
            logger.info("%s: timestamps are milliseconds (all >= 1e11); divided by 1000", table.file)
        seconds = ts.seconds
        checks += timestamp_checks(table, ts)
    else:
        seconds = np.arange(len(f), dtype=np.int64)
    rating = np.full(len(f), np.nan, np.float32)
    if "rating" in f:
        rating, r_bad = parse_ratings(f["rating"])
        checks.append(Check("bad_rating", "rating", r_bad,
                            lambda i: f"cannot parse {table.value(i, 'rating')!r} as a rating (a finite number)"))
    kept, keep = problems.apply(table, checks)
    return pd.DataFrame(
        {"user_id": kept.frame["user_id"], "item": idx[keep], "timestamp": seconds[keep], "rating": rating[keep]}
    )
