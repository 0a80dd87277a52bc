"""The ``amazon`` loader: Amazon review dumps (``data.path``) plus their item metadata (``data.items_path``).

Both files are JSON lines, plain or gzip (recognised by content, whatever the name: ``.json.gz``,
``.jsonl``, ...). Each field is taken from the first key present in a record, so both published layouts
(and a mix) load:

========== ================================= =====================================================
field      2018 layout (McAuley lab, v2)     2023 layout (Amazon Reviews'23)
========== ================================= =====================================================
user       ``reviewerID``                    ``user_id``
item       ``asin``                          ``parent_asin`` (else ``asin``)
rating     ``overall``                       ``rating``
time       ``unixReviewTime`` (seconds)      ``timestamp`` (milliseconds, detected by magnitude)
title      ``title``                         ``title``
brand      ``brand``                         ``store``
categories ``categories`` (list of lists) or ``categories`` (list), else ``main_category``
           ``category`` (list)
description ``description`` (string or list) ``description`` (list)
price      ``price`` (text, "$9.99")         ``price`` (number)
========== ================================= =====================================================

Other fields (review text, images, votes...) are ignored. Ratings-only CSVs also load as reviews: without a
header in the 2018 order ``item,user,rating,timestamp``, or with a header naming the keys above
(``user_id,parent_asin,rating,timestamp``). Metadata lines written as Python literals (the 2014 dumps) are
read too (see :mod:`recsys_llm.data.readers`).

Text cleaning: HTML entities unescaped (``&amp;`` -> ``&``), HTML tags removed, whitespace collapsed;
lists flattened and joined with ``", "`` (categories, duplicates removed) or ``" "`` (description). Price
stays text ("" when absent).

Metadata choices, counted in ``Dataset.dropped`` whatever ``data.on_bad_rows`` says, because real dumps
have them and the standard preprocessing (UniSRec, RecBole) does the same:

* ``item_not_in_metadata``: reviews of items the metadata does not list are dropped (a text model cannot
  embed them). If every review is dropped that way, the error says so.
* ``duplicate_metadata``: the 2018 metadata repeats some records; the first record of each item is kept.

The catalog is the items that have reviews after every filter (``Loaded.interacted_only``), with columns
``item_id, title, brand, categories, description, price``. Without metadata the catalog is the reviewed
item ids, titled by id (logged: the text model then has nothing to read).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data.canonical import Loaded, canonical_catalog, map_interactions
from recsys_llm.data.checks import BadRows, DataError, Table, existing, missing_id
from recsys_llm.data.generic import seen_items
from recsys_llm.data.ids import normalise_external
from recsys_llm.data.readers import open_text, read_csv, read_headerless, read_jsonl, require_rows

logger = logging.getLogger(__name__)

REVIEW_KEYS = {
    "user_id": ("reviewerID", "user_id"),
    "item_id": ("parent_asin", "asin"),
    "rating": ("overall", "rating"),
    "timestamp": ("unixReviewTime", "timestamp"),
}
"""Canonical interaction column -> review keys, first present wins (2018 and 2023 layouts)."""
META_KEYS = {
    "item_id": ("parent_asin", "asin"),
    "title": ("title",),
    "brand": ("brand", "store"),
    "categories": ("categories", "category", "main_category"),
    "description": ("description",),
    "price": ("price",),
}
"""Catalog column -> metadata keys, first non-empty wins."""
RATINGS_CSV = ["item_id", "user_id", "rating", "timestamp"]
"""Column order of the headerless 2018 "ratings only" CSVs."""
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any, sep: str = " ", unique: bool = False) -> str:
    """Metadata value -> one line of text: lists flattened and joined by ``sep``, entities unescaped, tags removed.

    Args:
        value: a string, number, None, or (nested) list of them.
        sep: joins the parts of a list.
        unique: keep only the first of equal parts (categories repeat across the paths of a 2014 record).

    Example:
        >>> clean_text(["Tools &amp; Home", ["<b>Drills</b>", "Tools &amp; Home"]], sep=", ", unique=True)
        'Tools & Home, Drills'
        >>> clean_text(None), clean_text(12.5)
        ('', '12.5')
    """
    parts = [_SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(v)))).strip() for v in _flatten(value)]
    kept = [p for p in parts if p]
    return sep.join(dict.fromkeys(kept) if unique else kept)


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif value is not None and not (isinstance(value, float) and np.isnan(value)):
        yield value


def _coalesce(table: Table, keys: Mapping[str, tuple[str, ...]], required: tuple[str, ...], what: str) -> Table:
    """One canonical column per entry of ``keys``: the first key with a value in each record."""
    frame, out, labels = table.frame, {}, {}
    for canon, candidates in keys.items():
        present = [k for k in candidates if k in frame.columns and frame[k].notna().any()]
        if not present:
            if canon in required:
                found = [str(c) for c in frame.columns if frame[c].notna().any()]
                raise DataError(f"{table.file}: no record has the field {' or '.join(map(repr, candidates))} "
                                f"(fields found: {', '.join(found)}); is this an Amazon {what} file?")
            continue
        col = frame[present[0]]
        for k in present[1:]:
            col = col.where(col.notna(), frame[k])
        out[canon] = col
        labels[canon] = present[0] if frame[present[0]].notna().all() else "/".join(present)
    return Table(pd.DataFrame(out), table.file, table.rows, table.unit, labels)


def _read_reviews(path: Path, problems: BadRows) -> Table:
    """Reviews as a table with canonical columns (JSON lines, or a ratings-only CSV)."""
    keys = {k for names in REVIEW_KEYS.values() for k in names}
    if path.name.lower().removesuffix(".gz").endswith(".csv"):
        with open_text(path) as f:
            header = f.readline().strip().split(",")
        if keys & set(header):
            table = read_csv(path, problems, ",", dict.fromkeys(keys, str))
        else:
            raw = read_headerless(path, ",", RATINGS_CSV, problems, ("utf-8", "latin-1"))
            return Table(raw.frame, raw.file, raw.rows, raw.unit, {})
    else:
        table = require_rows(read_jsonl(path, problems, sorted(keys)))
    return _coalesce(table, REVIEW_KEYS, ("user_id", "item_id"), "review")


def _read_meta(path: Path, problems: BadRows, wanted: set[str]) -> Table:
    """Metadata of the reviewed items -> item_id, title, brand, categories, description, price (clean text)."""
    keys = sorted({k for names in META_KEYS.values() for k in names})
    ids = ("parent_asin", "asin")
    raw = read_jsonl(path, problems, keys, where=lambda r: any(str(r.get(k)) in wanted for k in ids))
    if len(raw) == 0:
        raise DataError(f"{path}: no metadata record names a reviewed item (by 'parent_asin' or 'asin'); are "
                        "the reviews and the metadata of the same category and version?")
    table = _coalesce(raw, {"item_id": ids}, ("item_id",), "metadata")
    frame = table.frame.assign(item_id=normalise_external(table.frame["item_id"]))
    for column, names in META_KEYS.items():
        if column != "item_id":
            lists = column == "categories"
            frame[column] = [clean_text(next((v for v in row if _has(v)), None), ", " if lists else " ", lists)
                             for row in zip(*(raw.frame[k] for k in names), strict=True)]
    n_untitled = int((frame["title"] == "").sum())
    if n_untitled:
        logger.warning("%s: %d of %d reviewed items have no title in the metadata", path, n_untitled, len(frame))
    dup = frame["item_id"].duplicated(keep="first").to_numpy() & ~missing_id(frame["item_id"])
    problems.count(str(path), "line", "duplicate_metadata", int(dup.sum()))
    return Table(frame.loc[~dup].reset_index(drop=True), table.file, table.rows[~dup], table.unit, table.labels)


def _has(value: Any) -> bool:
    return any(str(v).strip() for v in _flatten(value))


def _known_items(reviews: Table, catalog_ids: pd.Series, problems: BadRows) -> Table:
    """Drop (and count) reviews of items the metadata does not list; all of them dropped is an error."""
    ids = reviews.frame["item_id"]
    unknown = ~normalise_external(ids).isin(set(catalog_ids)).to_numpy() & ~missing_id(ids)
    if unknown.all():
        raise DataError(f"{reviews.file}: none of the reviewed items is in the metadata file; are the reviews "
                        "and the metadata of the same category and version?")
    problems.count(reviews.file, reviews.unit, "item_not_in_metadata", int(unknown.sum()))
    return reviews.take(~unknown)


def load_amazon(cfg: DataConfig, problems: BadRows) -> Loaded:
    """Reviews (``data.path``) + metadata (``data.items_path``) -> catalog of reviewed items and interactions."""
    if cfg.path is None:
        raise DataError("dataset 'amazon' needs data.path: the reviews file (JSON lines, .gz allowed), and "
                        "data.items_path: the metadata file (--path REVIEWS --items-path META)")
    reviews_path = existing(Path(cfg.path), "data.path, the Amazon reviews")
    reviews = _read_reviews(reviews_path, problems)
    sources = [str(reviews_path)]
    if cfg.items_path is None:
        logger.warning("%s: no data.items_path (metadata); items are titled by their id, so the text model "
                       "has nothing to read", reviews_path)
        items = seen_items(reviews)
    else:
        meta_path = existing(Path(cfg.items_path), "data.items_path, the Amazon metadata")
        wanted = set(normalise_external(reviews.frame["item_id"].dropna()))
        items = _read_meta(meta_path, problems, wanted)
        reviews = _known_items(reviews, items.frame["item_id"], problems)
        sources.append(str(meta_path))
    catalog = canonical_catalog(items, problems)
    return Loaded(catalog, map_interactions(reviews, catalog, problems), sources, interacted_only=True)
