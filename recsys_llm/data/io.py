"""Raw files -> the canonical :class:`~recsys_llm.data.schema.Dataset` (interactions + item catalog + users).

One loader per source format (``cfg.dataset``), registered in :data:`LOADERS`: a function
``(DataConfig, BadRows) -> Loaded`` built from the same pieces: readers that keep each row's place in its file
(:mod:`recsys_llm.data.readers`), vectorised checks that raise a :class:`DataError` naming file, row and column
or drop and count the bad rows (:mod:`recsys_llm.data.checks`, ``cfg.on_bad_rows``) and the canonical
catalog and interaction mapping (:mod:`recsys_llm.data.canonical`). A new loader plugs in by one row of
:data:`LOADERS`. :func:`load_dataset` then applies the filters of :mod:`recsys_llm.data.filters` (exact
duplicates, ``min_rating``, k-core) and maps users.

Loaders: ``ml-latest-small`` (bundled), ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-latest`` (``cfg.path`` = the
unpacked GroupLens folder; :mod:`~recsys_llm.data.movielens`), ``generic`` (``cfg.path`` = interactions file,
``cfg.items_path`` = items file; :mod:`~recsys_llm.data.generic`), ``amazon`` (review + metadata dumps;
:mod:`~recsys_llm.data.amazon`) and ``unisrec`` (UniSRec/RecBole atomic files with their published split;
:mod:`~recsys_llm.data.unisrec`).

Example:
    >>> from recsys_llm.config import DataConfig
    >>> from recsys_llm.data.io import load_dataset
    >>> ds = load_dataset(DataConfig(dataset="ml-latest-small"))
    >>> len(ds.interactions), ds.n_users, ds.n_items
    (100836, 610, 9742)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data import amazon, generic, movielens, unisrec
from recsys_llm.data.canonical import Loaded
from recsys_llm.data.checks import BadRows, DataError
from recsys_llm.data.filters import drop_duplicates, k_core, min_rating, prune_catalog
from recsys_llm.data.generic import read_items
from recsys_llm.data.ids import IdMap, normalise_external
from recsys_llm.data.schema import Dataset

__all__ = ["LOADERS", "DataError", "available_datasets", "load_dataset", "read_items"]

logger = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[DataConfig, BadRows], Loaded]] = {
    "ml-latest-small": movielens.load_ml_latest,
    "ml-100k": movielens.load_ml100k,
    "ml-1m": movielens.load_ml_dat,
    "ml-10m": movielens.load_ml_dat,
    "ml-latest": movielens.load_ml_latest,
    "generic": generic.load_generic,
    "amazon": amazon.load_amazon,
    "unisrec": unisrec.load_unisrec,
}
"""``data.dataset`` name -> loader. A loader reads and checks its files and returns a :class:`Loaded`."""


def available_datasets() -> list[str]:
    """Names accepted by ``DataConfig.dataset``.

    Returns:
        The loader names; only ``ml-latest-small`` works without ``data.path``.

    Example:
        >>> "ml-100k" in available_datasets()
        True
    """
    return list(LOADERS)


def _filtered(loaded: Loaded, cfg: DataConfig, problems: BadRows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Duplicates, min_rating and k-core applied; the catalog pruned when the loader asks. -> (inter, items)."""
    inter, file = loaded.interactions, loaded.sources[0]
    if len(inter) == 0:
        raise DataError(f"{file}: no interactions left after validation (every row was dropped); check the data")
    users = pd.factorize(normalise_external(inter["user_id"]))[0]
    keep = drop_duplicates(inter, users, problems, file) & min_rating(inter, cfg.min_rating, file)
    items = loaded.catalog.items
    # a k-core over items removes the items it empties from the catalog; items with no interaction at all in the
    # data (description-only, new) stay unless the loader's catalog is "the items in the data"
    spare = np.full(len(items), not loaded.interacted_only)
    spare[inter["item"].to_numpy(np.int64)[keep]] = False
    keep[keep] = k_core(users[keep], inter["item"].to_numpy()[keep], cfg.min_user_interactions,
                        cfg.min_item_interactions, file)
    inter = inter.loc[keep].reset_index(drop=True)
    if loaded.interacted_only or cfg.min_item_interactions > 1:
        items, item = prune_catalog(items, inter["item"].to_numpy(np.int64), spare)
        inter = inter.assign(item=item)
    return inter, items


def _holdout(loaded: Loaded, users: IdMap, items: pd.DataFrame) -> pd.DataFrame | None:
    """The loader's own split, restricted to users and items that survived the filters."""
    holdout = loaded.holdout
    if holdout is None:
        return None
    known = pd.Index(items["item_id"])
    present = (
        (users.to_internal(holdout["user_id"]) >= 0)
        & holdout["valid_item_id"].isin(known).to_numpy()
        & holdout["test_item_id"].isin(known).to_numpy()
    )
    if not present.all():
        logger.warning("%s: %d of %d users of the published split were filtered out; the split keeps the rest",
                       loaded.sources[0], (~present).sum(), len(present))
    return holdout.loc[present].reset_index(drop=True)


def _assemble(name: str, loaded: Loaded, cfg: DataConfig, problems: BadRows) -> Dataset:
    """Validated interactions + catalog -> canonical Dataset (users mapped, sorted by user then time)."""
    inter, items = _filtered(loaded, cfg, problems)
    user_map = IdMap.fit(inter["user_id"])
    user = user_map.to_internal(inter["user_id"])
    ts = inter["timestamp"].to_numpy(np.int64)
    order = np.lexsort((ts, user))  # stable: ties keep file order
    interactions = pd.DataFrame(
        {
            "user": user[order],
            "item": inter["item"].to_numpy(np.int64)[order],
            "timestamp": ts[order],
            "rating": inter["rating"].to_numpy(np.float32)[order],
        }
    )
    users = pd.DataFrame(
        {"user": np.arange(len(user_map), dtype=np.int64), "user_id": user_map.external.astype(str)}
    )
    if problems.counts:
        logger.warning("%s: dropped rows per reason: %s", name, problems.counts)
    return Dataset(name, interactions, items, users, loaded.sources, dict(problems.counts),
                   holdout=_holdout(loaded, user_map, items))


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load a data set into the canonical schema (see :mod:`recsys_llm.data.schema`).

    Args:
        cfg: ``dataset`` picks the loader (:func:`available_datasets`); ``path`` / ``items_path`` /
            ``descriptions_path`` locate files; ``on_bad_rows`` is 'raise' or 'drop'; ``min_rating`` and
            ``min_user_interactions`` / ``min_item_interactions`` (k-core) filter.

    Returns:
        A validated :class:`Dataset`; ``dropped`` counts rows dropped per reason (bad rows under
        ``on_bad_rows='drop'``, exact duplicates always).

    Raises:
        DataError: unknown data set, missing folder/file/column, a bad row (with ``on_bad_rows='raise'``), or
            a filter that leaves nothing; the message names the file, row and column and what to do.

    Example:
        >>> ds = load_dataset(DataConfig(dataset="ml-latest-small", min_rating=4.0))
        >>> ds.interactions.dtypes.astype(str).tolist()
        ['int64', 'int64', 'int64', 'float32']
    """
    loader = LOADERS.get(cfg.dataset)
    if loader is None:
        raise DataError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(available_datasets())}")
    start = time.perf_counter()
    problems = BadRows(cfg.on_bad_rows)
    ds = _assemble(cfg.dataset, loader(cfg, problems), cfg, problems)
    ds.validate()
    logger.info(
        "loaded %s: %d interactions, %d users, %d items, text columns %s, in %.2fs",
        ds.name, len(ds.interactions), ds.n_users, ds.n_items, ds.text_columns, time.perf_counter() - start,
    )  # fmt: skip
    return ds
