"""Raw files -> the canonical :class:`~recsys_llm.data.schema.Dataset` (interactions + item catalog + users).

One loader per source format, all built from the same helpers: a reader that keeps the file's row numbers
(``_read_csv`` for quoted files with a header, ``_read_headerless`` for MovieLens ``::``/tab/pipe files,
``_read_jsonl``, ``_read_parquet``), vectorised value checks (``_Check``) that either raise a
:class:`DataError` naming file, row and column or drop and count the bad rows (``cfg.on_bad_rows``), and
``_build_catalog`` / ``_map_interactions`` / ``_assemble`` that map ids through
:class:`~recsys_llm.data.ids.IdMap` and produce the exact canonical schema.

Loaders (``cfg.dataset``): ``ml-latest-small`` (bundled with the package), ``ml-100k``, ``ml-1m``,
``ml-10m``, ``ml-latest`` (``cfg.path`` = the unpacked GroupLens folder) and ``generic`` (``cfg.path`` =
interactions file, ``cfg.items_path`` = items file; .csv, .tsv, .jsonl or .parquet).

Row numbers in messages are 1-based line numbers for text files (the header is line 1) and 1-based record
indices for jsonl/parquet. Quoted CSV fields that span lines shift the line numbers after them.

Example:
    >>> from recsys_llm.config import DataConfig
    >>> from recsys_llm.data.io import load_dataset
    >>> ds = load_dataset(DataConfig(dataset="ml-latest-small"))
    >>> len(ds.interactions), ds.n_users, ds.n_items
    (100836, 610, 9742)
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data.ids import IdMap, normalise_external
from recsys_llm.data.schema import Dataset

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "datasets" / "ml_latest_small"
MAX_TAGS = 10
"""At most this many tags per item (most frequent first, then alphabetical)."""
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flag columns of ml-100k ``u.item``, in ``u.genre`` order."""
_FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
_DROP_HINT = "pass on_bad_rows='drop'"


class DataError(ValueError):
    """Input data cannot be loaded; the message names file, row and column where they apply, and the fix."""


# --------------------------------------------------------------------------------------------------- tables


@dataclass
class _Table:
    """A raw frame plus what error messages need: its file, each row's number in that file, column labels."""

    frame: pd.DataFrame
    file: str
    rows: np.ndarray  # (n,) int64: line number (text) or record index (jsonl/parquet), 1-based
    unit: str = "row"
    labels: dict[str, str] = field(default_factory=dict)  # canonical column -> column name in the file

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, keep: np.ndarray) -> _Table:
        frame = self.frame.loc[keep].reset_index(drop=True)
        return _Table(frame, self.file, self.rows[keep], self.unit, self.labels)

    def where(self, i: int, column: str | None = None) -> str:
        col = f", column '{self.labels.get(column, column)}'" if column else ""
        return f"{self.file}: {self.unit} {self.rows[i]}{col}"

    def value(self, i: int, column: str) -> str:
        """The raw cell as text for messages ("" when missing)."""
        v = self.frame[column].iloc[i]
        return "" if pd.api.types.is_scalar(v) and pd.isna(v) else str(v)


class _Check(NamedTuple):
    reason: str  # key in Dataset.dropped
    column: str | None
    bad: np.ndarray  # (n,) bool
    describe: Callable[[int], str]  # row position -> the problem, for the message


class _BadRows:
    """Applies ``on_bad_rows``: raise on the first bad row, or drop bad rows and count them per reason."""

    def __init__(self, on_bad_rows: str) -> None:
        self.drop = on_bad_rows == "drop"
        self.counts: dict[str, int] = {}

    def apply(self, table: _Table, checks: list[_Check]) -> tuple[_Table, np.ndarray]:
        """Raise for the earliest bad row over all checks, or drop every bad row (counted under its first reason).

        Returns the kept table and the (n,) bool mask of kept rows.
        """
        checks = [c for c in checks if c.bad.any()]
        if not checks:
            return table, np.ones(len(table), dtype=bool)
        if not self.drop:
            first = min(checks, key=lambda c: int(np.argmax(c.bad)))
            i = int(np.argmax(first.bad))
            raise DataError(
                f"{table.where(i, first.column)}: {first.describe(i)}; fix the {table.unit} or {_DROP_HINT}"
            )
        taken = np.zeros(len(table), dtype=bool)
        for c in checks:
            new = c.bad & ~taken
            self._count(table.file, table.unit, c.reason, int(new.sum()))
            taken |= new
        return table.take(~taken), ~taken

    def malformed(self, file: str, unit: str, rows: np.ndarray, describe: str) -> None:
        """Rows that could not be split into fields (reported before a frame exists)."""
        if len(rows) == 0:
            return
        if not self.drop:
            raise DataError(f"{file}: {unit} {rows[0]}: {describe}; fix the {unit} or {_DROP_HINT}")
        self._count(file, unit, "malformed_line", len(rows))

    def _count(self, file: str, unit: str, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + n
            logger.warning("%s: dropped %d %s(s): %s", file, n, unit, reason)


# -------------------------------------------------------------------------------------------------- readers


def _read_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _pandas_read(source: Any, file: str, **kwargs: Any) -> tuple[pd.DataFrame, list[str]]:
    """pd.read_csv keeping empty strings as NaN only; returns the frame and the ParserWarning texts."""
    opts = {"keep_default_na": False, "na_values": [""], "low_memory": False, "on_bad_lines": "warn"}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(source, **opts, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: the file is empty; check the path") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{file}: not {kwargs.get('encoding', 'utf-8')} text ({e.reason}); re-save it as UTF-8"
        ) from None
    except pd.errors.ParserError as e:
        raise DataError(f"{file}: cannot parse the file ({e}); check the separator and quoting") from None
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return frame, [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]


def _require_rows(table: _Table) -> _Table:
    if len(table) == 0:
        raise DataError(
            f"{table.file}: no data rows (the file is empty or has only a header); check the file"
        )
    return table


def _read_csv(path: Path, problems: _BadRows, sep: str = ",", dtype: dict[str, Any] | None = None) -> _Table:
    """Read a delimited UTF-8 file with a header row; rows with too many fields are reported by line number."""
    file = str(path)
    frame, messages = _pandas_read(path, file, sep=sep, encoding="utf-8", skip_blank_lines=False, dtype=dtype)
    found = [
        re.search(r"line (\d+): expected (\d+) fields, saw (\d+)", m) for m in "".join(messages).splitlines()
    ]
    bad = np.array([int(m.group(1)) for m in found if m], dtype=np.int64)
    if len(bad):
        m = next(m for m in found if m)
        problems.malformed(
            file, "row", bad, f"expected {m.group(2)} fields separated by {sep!r}, found {m.group(3)}"
        )
    rows = np.setdiff1d(np.arange(2, 2 + len(frame) + len(bad), dtype=np.int64), bad)
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        logger.info("%s: skipped %d blank line(s)", file, int(blank.sum()))
    return _require_rows(_Table(frame, file, rows).take(~blank))


def _fields_per_line(data: bytes, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised field count and blank flag of every line of an unquoted file."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:
        ends = np.append(ends, len(buf))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    counts = np.bincount(np.searchsorted(ends, np.flatnonzero(buf == sep)), minlength=len(ends)) + 1
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, max(len(buf) - 1, 0))] == 13))
    return counts[: len(ends)], blank


def _read_headerless(
    path: Path, sep: str, names: list[str], problems: _BadRows, encodings: tuple[str, ...]
) -> _Table:
    """Read an unquoted file without header (MovieLens ``::``, tab or pipe); wrong field counts are caught exactly."""
    file = str(path)
    data = _read_bytes(path)
    if not data.strip():
        raise DataError(f"{file}: the file is empty; check the path")
    if sep == "::":
        data, sep = data.replace(b"::", b"\x1f"), "\x1f"
    encoding = _pick_encoding(data, encodings)
    counts, blank = _fields_per_line(data, ord(sep))
    bad = (counts != len(names)) & ~blank
    shown = "::" if sep == "\x1f" else sep
    if bad.any():
        i = int(np.argmax(bad))
        problems.malformed(
            file,
            "row",
            np.flatnonzero(bad) + 1,
            f"expected {len(names)} fields separated by {shown!r}, found {counts[i]}",
        )
    skip = np.flatnonzero(bad | blank)
    frame, _ = _pandas_read(
        io.BytesIO(data), file, sep=sep, header=None, names=names, quoting=csv.QUOTE_NONE,
        skiprows=set(skip.tolist()), encoding=encoding,
    )  # fmt: skip
    rows = np.flatnonzero(~(bad | blank)).astype(np.int64) + 1
    if len(rows) != len(frame):  # a stray carriage return split a line: fall back to counting records
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    return _require_rows(_Table(frame, file, rows))


def _pick_encoding(data: bytes, encodings: tuple[str, ...]) -> str:
    for enc in encodings[:-1]:
        try:
            data.decode(enc)
            return enc
        except UnicodeDecodeError:
            logger.info("not %s text, falling back to %s", enc, encodings[-1])
    return encodings[-1]


def _read_jsonl(path: Path) -> _Table:
    """One JSON object per line; an invalid line raises naming its record number."""
    try:
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as e:
        text = _read_bytes(path).decode("utf-8", errors="replace")
        records = [line for line in text.splitlines() if line.strip()]
        for n, line in enumerate(records, start=1):  # error path only: find the record to name
            try:
                json.loads(line)
            except json.JSONDecodeError as je:
                raise DataError(f"{path}: record {n}: not valid JSON ({je.msg}); fix the record") from None
        raise DataError(f"{path}: cannot read as JSON lines ({e}); write one JSON object per line") from None
    return _require_rows(_Table(frame, str(path), np.arange(1, len(frame) + 1, dtype=np.int64), "record"))


def _read_parquet(path: Path) -> _Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read as parquet ({type(e).__name__}: {e}); check the file") from None
    return _require_rows(_Table(frame, str(path), np.arange(1, len(frame) + 1, dtype=np.int64), "record"))


def _read_any(path: Path, problems: _BadRows) -> _Table:
    """Generic formats, chosen by extension (``.gz`` allowed after csv/tsv/jsonl)."""
    name = path.name.lower().removesuffix(".gz")
    ids_as_text = {"user_id": str, "item_id": str}  # "007" stays "007" in every file
    if name.endswith(".csv"):
        return _read_csv(path, problems, ",", ids_as_text)
    if name.endswith(".tsv"):
        return _read_csv(path, problems, "\t", ids_as_text)
    if name.endswith(".jsonl"):
        return _read_jsonl(path)
    if path.name.lower().endswith(".parquet"):
        return _read_parquet(path)
    raise DataError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(_FORMATS)}")


def _require(table: _Table, required: dict[str, str], optional: dict[str, str] | None = None) -> _Table:
    """Rename file columns to canonical names (``{canonical: name in file}``); a missing required one raises."""
    found = list(table.frame.columns)
    missing = [col for col in required.values() if col not in found]
    if missing:
        raise _missing_column(table, missing[0])
    mapping = {**required, **{k: v for k, v in (optional or {}).items() if v in found}}
    frame = table.frame[list(mapping.values())].set_axis(list(mapping), axis=1)
    return _Table(frame, table.file, table.rows, table.unit, {k: str(v) for k, v in mapping.items()})


def _missing_column(table: _Table, column: str) -> DataError:
    found = ", ".join(map(str, table.frame.columns))
    return DataError(
        f"{table.file}: missing required column '{column}' (columns found: {found}); "
        "rename the column or check the separator/format"
    )


# --------------------------------------------------------------------------------------------- value checks


def _blank(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s):
        return s.isna().to_numpy()
    return (s.isna() | s.astype(str).str.strip().eq("")).to_numpy()


def _parse_timestamps(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer seconds or ISO-8601 strings -> (int64 seconds, bad mask)."""
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(np.int64), np.zeros(len(s), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(s):
        secs = (pd.to_datetime(s, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return secs.fillna(0).to_numpy(np.int64), s.isna().to_numpy()
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan, copy=True)
    iso = np.isnan(values) & ~_blank(s)
    if iso.any():
        parsed = pd.to_datetime(s[iso].astype(str), utc=True, errors="coerce", format="ISO8601")
        values[iso] = ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
            np.float64, na_value=np.nan
        )
    bad = ~np.isfinite(values) | (values != np.floor(values))
    return np.where(bad, 0, values).astype(np.int64), bad


def _parse_ratings(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return values.astype(np.float32), ~np.isfinite(values)


def _id_checks(table: _Table, columns: tuple[str, ...]) -> list[_Check]:
    return [
        _Check("empty_id", c, _blank(table.frame[c]), lambda i: "value is empty; every row needs an id")
        for c in columns
    ]


def _text(s: pd.Series) -> pd.Series:
    """Any column -> str, "" for missing."""
    out = s.astype(object)
    return out.where(out.notna(), "").astype(str).reset_index(drop=True)


# ------------------------------------------------------------------------------------- catalog/interactions


@dataclass
class _Catalog:
    items: pd.DataFrame  # canonical items frame
    item_map: IdMap
    file: str


def _build_catalog(table: _Table, problems: _BadRows) -> _Catalog:
    """Catalog table with ``item_id`` + text columns -> canonical items (row i has item i); duplicates are bad rows."""
    ids = table.frame["item_id"]
    blank = _blank(ids)
    norm = ids.astype(str).str.strip().to_numpy()
    dup = pd.Series(np.where(blank, None, norm)).duplicated(keep="first").to_numpy() & ~blank

    def duplicate(i: int) -> str:
        first = int(np.flatnonzero((norm == norm[i]) & ~blank)[0])
        return f"duplicate item id {norm[i]!r} (first at {table.unit} {table.rows[first]}); item ids must be unique"

    checks = [*_id_checks(table, ("item_id",)), _Check("duplicate_item", "item_id", dup, duplicate)]
    kept, _ = problems.apply(table, checks)
    item_map = IdMap.fit(kept.frame["item_id"])
    order = np.argsort(item_map.to_internal(kept.frame["item_id"]), kind="stable")
    frame = kept.frame.iloc[order].reset_index(drop=True)
    items = pd.DataFrame(
        {"item": np.arange(len(frame), dtype=np.int64), "item_id": item_map.external.astype(str)}
    )
    for col in frame.columns:
        if col != "item_id":
            items[col] = _text(frame[col])
    return _Catalog(items, item_map, table.file)


def _item_refs(table: _Table, catalog: _Catalog) -> tuple[np.ndarray, list[_Check]]:
    """Map ``item_id`` to catalog positions; empty or unknown ids are checks."""
    idx = catalog.item_map.to_internal(table.frame["item_id"])

    def unknown(i: int) -> str:
        return f"item id {table.value(i, 'item_id').strip()!r} is not in the item catalog {catalog.file}"

    return idx, [*_id_checks(table, ("item_id",)), _Check("unknown_item", "item_id", idx < 0, unknown)]


def _map_interactions(table: _Table, catalog: _Catalog, problems: _BadRows) -> pd.DataFrame:
    """Interactions table (user_id, item_id, optional timestamp/rating) -> validated frame with catalog positions."""
    f = table.frame
    idx, checks = _item_refs(table, catalog)
    ts, ts_bad = (
        _parse_timestamps(f["timestamp"]) if "timestamp" in f else (np.arange(len(f)), np.zeros(len(f), bool))
    )
    no_rating = (np.full(len(f), np.nan, np.float32), np.zeros(len(f), bool))
    rating, r_bad = _parse_ratings(f["rating"]) if "rating" in f else no_rating
    checks = [
        *_id_checks(table, ("user_id",)),
        *checks,
        _Check("bad_timestamp", "timestamp", ts_bad,
               lambda i: f"cannot parse {table.value(i, 'timestamp')!r} as a timestamp (integer seconds or ISO-8601 date)"),
        _Check("bad_rating", "rating", r_bad,
               lambda i: f"cannot parse {table.value(i, 'rating')!r} as a rating (a finite number)"),
    ]  # fmt: skip
    kept, keep = problems.apply(table, checks)
    return pd.DataFrame(
        {"user_id": kept.frame["user_id"], "item": idx[keep], "timestamp": ts[keep], "rating": rating[keep]}
    )


def _tag_text(table: _Table, catalog: _Catalog, problems: _BadRows) -> pd.Series:
    """Per item: unique lower-cased stripped tags, most frequent first then alphabetical, at most MAX_TAGS."""
    idx, checks = _item_refs(table, catalog)
    kept, keep = problems.apply(table, checks)
    df = pd.DataFrame({"item": idx[keep], "tag": _text(kept.frame["tag"]).str.strip().str.lower()})
    counts = df[df["tag"] != ""].groupby(["item", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True], kind="stable")
    joined = counts.groupby("item").head(MAX_TAGS).groupby("item")["tag"].agg(", ".join)
    out = np.full(len(catalog.items), "", dtype=object)
    out[joined.index.to_numpy()] = joined.to_numpy()
    logger.info("%s: tags for %d of %d items", table.file, len(joined), len(out))
    return pd.Series(out).astype(str)


def _movielens_genres(s: pd.Series) -> pd.Series:
    """'Adventure|Animation' -> 'Adventure, Animation'; '(no genres listed)' -> ''."""
    text = _text(s)
    return text.where(text != "(no genres listed)", "").str.replace("|", ", ", regex=False)


# ------------------------------------------------------------------------------------------------- loaders


@dataclass
class _Loaded:
    catalog: _Catalog
    interactions: pd.DataFrame  # user_id (external), item (int64), timestamp (int64), rating (float32)
    sources: list[str]


def _find_optional(folder: Path, name: str) -> Path | None:
    """``folder/name`` or its ``.gz``, whichever exists."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _find(folder: Path, name: str, dataset: str) -> Path:
    found = _find_optional(folder, name)
    if found is not None:
        return found
    raise DataError(
        f"{folder}: missing {name} (needed by dataset {dataset!r}); point data.path at the unpacked folder"
    )


def _folder(cfg: DataConfig) -> Path:
    if cfg.path is None:
        if cfg.dataset == "ml-latest-small":
            return BUNDLED_DIR
        raise DataError(
            f"dataset {cfg.dataset!r} needs data.path: the folder of the unpacked GroupLens download"
        )
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (data.path for dataset {cfg.dataset!r}); check the path")
    return folder


def _attach_tags(catalog: _Catalog, tags: _Table | None, problems: _BadRows) -> None:
    """Add the ``tags`` text column ("" everywhere when the data set has no tags file)."""
    catalog.items["tags"] = "" if tags is None else _tag_text(tags, catalog, problems)


def _load_ml_latest(cfg: DataConfig, problems: _BadRows) -> _Loaded:
    """ml-latest / ml-latest-small: ratings.csv, movies.csv, optional tags.csv (each may be .gz)."""
    folder = _folder(cfg)
    ratings_path, movies_path = (
        _find(folder, "ratings.csv", cfg.dataset),
        _find(folder, "movies.csv", cfg.dataset),
    )
    tags_path = _find_optional(folder, "tags.csv")
    movies = _require(
        _read_csv(movies_path, problems), {"item_id": "movieId", "title": "title", "genres": "genres"}
    )
    movies.frame["genres"] = _movielens_genres(movies.frame["genres"])
    catalog = _build_catalog(movies, problems)
    tags = (
        None
        if tags_path is None
        else _require(_read_csv(tags_path, problems), {"item_id": "movieId", "tag": "tag"})
    )
    _attach_tags(catalog, tags, problems)
    cols = {"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp", "rating": "rating"}
    inter = _map_interactions(_require(_read_csv(ratings_path, problems), cols), catalog, problems)
    return _Loaded(catalog, inter, [str(p) for p in (ratings_path, movies_path, tags_path) if p is not None])


def _load_ml_dat(cfg: DataConfig, problems: _BadRows) -> _Loaded:
    """ml-1m / ml-10m: ratings.dat and movies.dat with '::' separators; ml-10m optionally tags.dat."""
    folder = _folder(cfg)
    enc = ("latin-1",) if cfg.dataset == "ml-1m" else ("utf-8", "latin-1")
    ratings_path, movies_path = (
        _find(folder, "ratings.dat", cfg.dataset),
        _find(folder, "movies.dat", cfg.dataset),
    )
    tags_path = _find_optional(folder, "tags.dat") if cfg.dataset == "ml-10m" else None
    movies = _read_headerless(movies_path, "::", ["MovieID", "Title", "Genres"], problems, enc)
    movies = _require(movies, {"item_id": "MovieID", "title": "Title", "genres": "Genres"})
    movies.frame["genres"] = _movielens_genres(movies.frame["genres"])
    catalog = _build_catalog(movies, problems)
    if cfg.dataset == "ml-10m":
        tags = None
        if tags_path is not None:
            tags = _read_headerless(tags_path, "::", ["UserID", "MovieID", "Tag", "Timestamp"], problems, enc)
            tags = _require(tags, {"item_id": "MovieID", "tag": "Tag"})
        _attach_tags(catalog, tags, problems)
    ratings = _read_headerless(
        ratings_path, "::", ["UserID", "MovieID", "Rating", "Timestamp"], problems, enc
    )
    cols = {"user_id": "UserID", "item_id": "MovieID", "rating": "Rating", "timestamp": "Timestamp"}
    inter = _map_interactions(_require(ratings, cols), catalog, problems)
    return _Loaded(catalog, inter, [str(p) for p in (ratings_path, movies_path, tags_path) if p is not None])


def _ml100k_genres(table: _Table, problems: _BadRows) -> _Table:
    """Validate the 19 genre flags (0/1) and replace them by one 'Action, Comedy' text column."""

    def flag_check(genre: str) -> _Check:
        bad = ~table.frame[genre].astype(str).isin(["0", "1"]).to_numpy()
        return _Check(
            "bad_value", genre, bad, lambda i: f"genre flag must be 0 or 1, got {table.value(i, genre)!r}"
        )

    kept, _ = problems.apply(table, [flag_check(g) for g in ML100K_GENRES])
    text = pd.Series("", index=kept.frame.index, dtype=object)
    for g in ML100K_GENRES[1:]:
        text = text + np.where(kept.frame[g].astype(str) == "1", g + ", ", "")
    frame = kept.frame[["item_id", "title"]].assign(genres=text.str.removesuffix(", "))
    return _Table(frame, kept.file, kept.rows, kept.unit, kept.labels)


def _ml100k_descriptions(path: Path, items: pd.DataFrame, problems: _BadRows) -> pd.Series:
    """movie_title,wiki_summary CSV joined on the exact u.item title."""
    desc = _require(_read_csv(path, problems), {"title": "movie_title", "description": "wiki_summary"}).frame
    desc = desc.assign(title=_text(desc["title"]), description=_text(desc["description"]))
    n_dup = int(desc["title"].duplicated().sum())
    if n_dup:
        logger.warning("%s: %d duplicate movie_title rows; the first of each is used", path, n_dup)
    lookup = desc.drop_duplicates("title").set_index("title")["description"]
    out = items["title"].map(lookup).fillna("").astype(str)
    logger.info("%s: descriptions for %d of %d items", path, int((out != "").sum()), len(out))
    return out


def _load_ml100k(cfg: DataConfig, problems: _BadRows) -> _Loaded:
    """ml-100k: u.data (tab: user item rating timestamp) and u.item (latin-1, pipe, 19 genre flags)."""
    folder = _folder(cfg)
    item_path, data_path = _find(folder, "u.item", cfg.dataset), _find(folder, "u.data", cfg.dataset)
    names = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
    raw = _read_headerless(item_path, "|", names, problems, ("latin-1",))
    raw = _require(raw, {"item_id": "movie id", "title": "movie title", **{g: g for g in ML100K_GENRES}})
    catalog = _build_catalog(_ml100k_genres(raw, problems), problems)
    sources = [str(data_path), str(item_path)]
    if cfg.descriptions_path is not None:
        desc_path = Path(cfg.descriptions_path)
        if not desc_path.is_file():
            raise DataError(
                f"{desc_path}: descriptions file not found (data.descriptions_path); check the path"
            )
        catalog.items["description"] = _ml100k_descriptions(desc_path, catalog.items, problems)
        sources.append(str(desc_path))
    names = ["user id", "item id", "rating", "timestamp"]
    ratings = _read_headerless(data_path, "\t", names, problems, ("utf-8", "latin-1"))
    cols = {"user_id": "user id", "item_id": "item id", "rating": "rating", "timestamp": "timestamp"}
    return _Loaded(catalog, _map_interactions(_require(ratings, cols), catalog, problems), sources)


def _generic_items(path: Path, problems: _BadRows) -> _Table:
    """Items file: item_id required; title from 'title', else the first text column, else the item id."""
    table = _read_any(path, problems)
    frame, labels = table.frame, {}
    if "item_id" not in frame.columns:
        raise _missing_column(table, "item_id")
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
    return _Table(frame[["item_id", "title", *rest]], table.file, table.rows, table.unit, labels)


def _load_generic(cfg: DataConfig, problems: _BadRows) -> _Loaded:
    """Interactions file (user_id, item_id, optional timestamp/rating) + items file (item_id, title, text...)."""
    if cfg.path is None:
        raise DataError(
            "dataset 'generic' needs data.path: the interactions file (.csv, .tsv, .jsonl, .parquet)"
        )
    inter_path = _existing(Path(cfg.path), "data.path")
    inter = _read_any(inter_path, problems)
    inter = _require(
        inter, {"user_id": "user_id", "item_id": "item_id"}, {"timestamp": "timestamp", "rating": "rating"}
    )
    sources = [str(inter_path)]
    if cfg.items_path is None:
        logger.info("%s: no data.items_path; the catalog is the item ids seen, titled by id", inter_path)
        ids = pd.unique(normalise_external(inter.frame["item_id"][~_blank(inter.frame["item_id"])]))
        rows = np.arange(1, len(ids) + 1, dtype=np.int64)
        items = _Table(pd.DataFrame({"item_id": ids, "title": ids}), str(inter_path), rows, "item")
    else:
        items_path = _existing(Path(cfg.items_path), "data.items_path")
        items = _generic_items(items_path, problems)
        sources.append(str(items_path))
    catalog = _build_catalog(items, problems)
    return _Loaded(catalog, _map_interactions(inter, catalog, problems), sources)


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found ({what}); check the path")
    return path


_LOADERS: dict[str, Callable[[DataConfig, _BadRows], _Loaded]] = {
    "ml-latest-small": _load_ml_latest,
    "ml-100k": _load_ml100k,
    "ml-1m": _load_ml_dat,
    "ml-10m": _load_ml_dat,
    "ml-latest": _load_ml_latest,
    "generic": _load_generic,
}


# ---------------------------------------------------------------------------------------------- public API


def available_datasets() -> list[str]:
    """Names accepted by ``DataConfig.dataset``.

    Returns:
        The loader names; only ``ml-latest-small`` works without ``data.path``.

    Example:
        >>> "ml-100k" in available_datasets()
        True
    """
    return list(_LOADERS)


def _min_rating(inter: pd.DataFrame, min_rating: float | None, file: str) -> pd.DataFrame:
    if min_rating is None:
        return inter
    if inter["rating"].isna().all():
        raise DataError(
            f"{file}: data.min_rating={min_rating} needs ratings, but the data has none; unset min_rating"
        )
    keep = (inter["rating"] >= min_rating).to_numpy()
    logger.info(
        "min_rating=%s: kept %d of %d interactions (removed %d)",
        min_rating,
        keep.sum(),
        len(keep),
        (~keep).sum(),
    )
    return inter.loc[keep].reset_index(drop=True)


def _assemble(name: str, loaded: _Loaded, cfg: DataConfig, problems: _BadRows) -> Dataset:
    """Validated interactions + catalog -> canonical Dataset (users mapped, sorted by user then time)."""
    inter = _min_rating(loaded.interactions, cfg.min_rating, loaded.sources[0])
    if len(inter) == 0:
        raise DataError(
            f"{loaded.sources[0]}: no interactions left after validation and filtering; check the data"
        )
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
        logger.warning("%s: dropped bad rows per reason: %s", name, problems.counts)
    return Dataset(name, interactions, loaded.catalog.items, users, loaded.sources, dict(problems.counts))


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load a data set into the canonical schema (see :mod:`recsys_llm.data.schema`).

    Args:
        cfg: ``dataset`` picks the loader (:func:`available_datasets`); ``path`` / ``items_path`` /
            ``descriptions_path`` locate files; ``on_bad_rows`` is 'raise' or 'drop'; ``min_rating`` filters.

    Returns:
        A validated :class:`Dataset`; ``dropped`` counts rows dropped per reason under ``on_bad_rows='drop'``.

    Raises:
        DataError: unknown data set, missing folder/file/column, or a bad row (with ``on_bad_rows='raise'``);
            the message names the file, row and column and what to do.

    Example:
        >>> ds = load_dataset(DataConfig(dataset="ml-latest-small", min_rating=4.0))
        >>> ds.interactions.dtypes.astype(str).tolist()
        ['int64', 'int64', 'int64', 'float32']
    """
    loader = _LOADERS.get(cfg.dataset)
    if loader is None:
        raise DataError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(available_datasets())}")
    start = time.perf_counter()
    problems = _BadRows(cfg.on_bad_rows)
    ds = _assemble(cfg.dataset, loader(cfg, problems), cfg, problems)
    ds.validate()
    logger.info(
        "loaded %s: %d interactions, %d users, %d items, text columns %s, in %.2fs",
        ds.name, len(ds.interactions), ds.n_users, ds.n_items, ds.text_columns, time.perf_counter() - start,
    )  # fmt: skip
    return ds


def read_items(path: str | Path, on_bad_rows: str = "raise") -> pd.DataFrame:
    """Read a generic items file (``item_id`` + text columns) with the same checks as the catalog loader.

    Used by cold start to add description-only items. Returns ``item_id``, ``title`` and the other text
    columns as str ("" when missing), in sorted-id order; the caller assigns internal ids.

    Raises:
        DataError: missing file or ``item_id`` column, unknown format, empty file, duplicate or empty ids.
    """
    problems = _BadRows(on_bad_rows)
    table = _generic_items(_existing(Path(path), "items file"), problems)
    return _build_catalog(table, problems).items.drop(columns="item")
