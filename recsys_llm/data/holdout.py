"""A fixed validation and test item per user, for ``leave_last_out``: a published split reproduced exactly.

Two sources, one mechanism (:func:`holdout_parts`): the file ``split.fixed_holdout`` (a peer's published
split, e.g. RecBole's on ml-100k where timestamps tie), or else the data set's own split
(``Dataset.holdout``, e.g. the valid/test targets of UniSRec atomic files). Both are a table
``user_id, valid_item_id, test_item_id`` in the data set's external ids; an empty ``valid_item_id`` means
the user has no validation item.

Rule, per listed user: the user's last interaction with the test item goes to test; the last interaction
with the validation item *other than that test interaction* goes to valid (so a user who bought the same item
twice can have it as both, but one interaction is never both); everything else, and every unlisted user, is
train. A validation or test item that is a cold item (``split.cold_item_fraction > 0``, only possible with the
data set's own split) is skipped: its interactions are in the cold slice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.config import SplitConfig
from recsys_llm.data.checks import DataError
from recsys_llm.data.schema import Dataset

logger = logging.getLogger(__name__)

COLUMNS = ("user_id", "valid_item_id", "test_item_id")


def read_holdout(path: str | Path) -> pd.DataFrame:
    """Read a holdout file (tab-separated for ``.tsv``, else comma) -> ``user_id, valid_item_id, test_item_id``.

    Raises:
        DataError: missing file or column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split.fixed_holdout file not found")
    table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table[list(COLUMNS)].apply(lambda s: s.str.strip())


def _last_rows(warm: pd.DataFrame, n_items: int) -> tuple[pd.Series, pd.Series]:
    """(user * n_items + item) -> row of the last and of the second-last such interaction in ``warm``."""
    key = warm["user"].to_numpy() * n_items + warm["item"].to_numpy()  # (rows,) unique per (user, item)
    rows = pd.Series(np.arange(len(warm))).groupby(key)
    before = rows.nth(-2)
    return rows.last(), pd.Series(before.to_numpy(), index=key[before.index.to_numpy()])


def _lookup(index: pd.Index, values: pd.Series, column: str, ds: Dataset, source: str, first: int) -> np.ndarray:
    found = index.get_indexer(values)
    bad = (found < 0) & (values != "").to_numpy() if column == "valid_item_id" else found < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: row {row + first}, column {column}: {values.iloc[row]!r} is not in "
                        f"data set {ds.name!r}; is this split file for another data set?")
    return found


def holdout_parts(warm: pd.DataFrame, ds: Dataset, holdout: pd.DataFrame, source: str, first_row: int,
                  cold_items: np.ndarray) -> np.ndarray:
    """Parts (0 train, 1 valid, 2 test) of the ``warm`` rows (canonical order) from a holdout table.

    Args:
        warm: warm interaction rows, sorted by user then time.
        ds: the data set (external ids of users and items).
        holdout: ``user_id, valid_item_id, test_item_id`` (str; "" = no validation item).
        source: named in messages (the file, or the data set's split).
        first_row: row number of the table's first row in messages (2 under a header line).
        cold_items: cold item ids; their holdout entries are skipped.

    Raises:
        DataError: an unknown user or item, a pair the user never interacted with, or a validation and test
            item that can only be the same interaction (the message names the source, row and column).
    """
    users = _lookup(pd.Index(ds.users["user_id"].astype(str)), holdout["user_id"], "user_id", ds, source, first_row)
    item_index = pd.Index(ds.items["item_id"].astype(str))
    last, before = _last_rows(warm, ds.n_items)
    test = _lookup(item_index, holdout["test_item_id"], "test_item_id", ds, source, first_row)
    valid = _lookup(item_index, holdout["valid_item_id"], "valid_item_id", ds, source, first_row)
    part = np.zeros(len(warm), dtype=np.int8)
    cold = np.isin(np.stack([valid, test]), cold_items)  # (2, rows)
    for column, items, value, skip in (("test_item_id", test, 2, cold[1]), ("valid_item_id", valid, 1, cold[0])):
        same = (items == test) & (value == 1)
        keys = users * ds.n_items + items
        rows = np.where(same, before.reindex(keys).to_numpy(), last.reindex(keys).to_numpy())
        missing = np.isnan(rows) & ~skip & (items >= 0)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            who, what = holdout["user_id"].iloc[row], holdout[column].iloc[row]
            why = (f"user {who} interacted with item {what} once, so it cannot be both the validation and the "
                   "test interaction" if same[row] else f"user {who} never interacted with item {what}")
            raise DataError(f"{source}: row {row + first_row}, column {column}: {why}")
        take = ~np.isnan(rows) & ~skip & (items >= 0)
        part[rows[take].astype(np.int64)] = value
    if cold.any():
        logger.warning("%s: %d validation/test items of the fixed split are cold items and left to the cold slice;"
                       " set split.cold_item_fraction=0 to reproduce the split exactly", source, int(cold.sum()))
    return part


def fixed_holdout(warm: pd.DataFrame, ds: Dataset, cfg: SplitConfig, cold_items: np.ndarray) -> np.ndarray | None:
    """Parts from ``cfg.fixed_holdout``, else from ``ds.holdout``; None when neither is given."""
    if cfg.fixed_holdout:
        if ds.holdout is not None:
            logger.info("split.fixed_holdout=%s replaces the data set's own split", cfg.fixed_holdout)
        return holdout_parts(warm, ds, read_holdout(cfg.fixed_holdout), str(cfg.fixed_holdout), 2, cold_items)
    if ds.holdout is None:
        return None
    logger.info("%s: using the data set's own validation/test split for %d users", ds.name, len(ds.holdout))
    return holdout_parts(warm, ds, ds.holdout.astype(str), f"{ds.name} (its own split, data/holdout.parquet)",
                         1, cold_items)
