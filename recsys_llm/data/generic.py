"""The ``generic`` loader: an interactions file plus an optional items file, in any format of :func:`read_any`.

Interactions: ``user_id, item_id`` and optionally ``timestamp`` (seconds, milliseconds or ISO-8601; without
it, file order is time order) and ``rating``. Items: ``item_id`` plus any text columns; ``title`` comes from
the column ``title``, else the first text column, else the item id. Without an items file the catalog is the
item ids seen, titled by id. :func:`read_items` reads an items file alone (cold start adds items with it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data.canonical import Loaded, canonical_catalog, map_interactions
from recsys_llm.data.checks import BadRows, DataError, Table, existing, missing_column, missing_id, require
from recsys_llm.data.ids import normalise_external
from recsys_llm.data.readers import read_any

logger = logging.getLogger(__name__)


def generic_items(path: Path, problems: BadRows) -> Table:
    """Items file: item_id required; title from 'title', else the first text column, else the item id."""
    table = read_any(path, problems)
    frame, labels = table.frame, {}
    if "item_id" not in frame.columns:
        raise missing_column(table, "item_id")
    if "item" in frame.columns:
        raise DataError(f"{path}: column 'item' is reserved for the internal item index; rename it")
    if "title" not in frame.columns:
        text_cols = [
            c for c in frame.columns if c != "item_id" and not pd.api.types.is_numeric_dtype(frame[c])
        ]
        source = text_cols[0] if text_cols else "item_id"
        logger.info("%s: no 'title' column; using column %r as the title", path, source)
        frame = frame.rename(columns={source: "title"}) if text_cols else frame.assign(title=frame["item_id"])
        labels["title"] = source
    rest = [c for c in frame.columns if c not in ("item_id", "title")]
    return Table(frame[["item_id", "title", *rest]], table.file, table.rows, table.unit, labels)


def seen_items(inter: Table) -> Table:
    """A catalog of the item ids an interactions table uses, titled by id (no items file)."""
    ids = inter.frame["item_id"]
    ids = pd.unique(normalise_external(ids[~missing_id(ids)]))
    rows = np.arange(1, len(ids) + 1, dtype=np.int64)
    return Table(pd.DataFrame({"item_id": ids, "title": ids}), inter.file, rows, "item")


def load_generic(cfg: DataConfig, problems: BadRows) -> Loaded:
    """Interactions file (user_id, item_id, optional timestamp/rating) + items file (item_id, title, text...)."""
    if cfg.path is None:
        raise DataError(
            "dataset 'generic' needs data.path: the interactions file (.csv, .tsv, .jsonl, .parquet)"
        )
    inter_path = existing(Path(cfg.path), "data.path")
    inter = read_any(inter_path, problems)
    inter = require(
        inter, {"user_id": "user_id", "item_id": "item_id"}, {"timestamp": "timestamp", "rating": "rating"}
    )
    sources = [str(inter_path)]
    if cfg.items_path is None:
        logger.info("%s: no data.items_path; the catalog is the item ids seen, titled by id", inter_path)
        items = seen_items(inter)
    else:
        items_path = existing(Path(cfg.items_path), "data.items_path")
        items = generic_items(items_path, problems)
        sources.append(str(items_path))
    catalog = canonical_catalog(items, problems)
    return Loaded(catalog, map_interactions(inter, catalog, problems), sources)


def read_items(path: str | Path, on_bad_rows: str = "raise") -> pd.DataFrame:
    """Read a generic items file (``item_id`` + text columns) with the same checks as the catalog loader.

    Used by cold start to add description-only items. Returns ``item_id``, ``title`` and the other text
    columns as str ("" when missing), in sorted-id order; the caller assigns internal ids.

    Raises:
        DataError: missing file or ``item_id`` column, unknown format, empty file, duplicate or empty ids.
    """
    problems = BadRows(on_bad_rows)
    table = generic_items(existing(Path(path), "items file"), problems)
    return canonical_catalog(table, problems).items.drop(columns="item")
