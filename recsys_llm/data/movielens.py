"""GroupLens MovieLens loaders: ``ml-latest-small`` (bundled), ``ml-latest``, ``ml-100k``, ``ml-1m``, ``ml-10m``.

``data.path`` is the unpacked GroupLens folder (each file may also be gzip-compressed as ``NAME.gz``).
Catalog columns: ``title``, ``genres`` (``"Adventure, Animation"``), ``tags`` (ml-latest, ml-10m: at most
:data:`MAX_TAGS` per item, most frequent first) and, for ml-100k with ``data.descriptions_path``,
``description`` joined on the exact title.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_llm.config import DataConfig
from recsys_llm.data.canonical import Catalog, Loaded, canonical_catalog, item_refs, map_interactions
from recsys_llm.data.checks import BadRows, Check, DataError, Table, as_text, require
from recsys_llm.data.ids import normalise_external
from recsys_llm.data.readers import find, find_optional, read_csv, read_headerless

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "datasets" / "ml_latest_small"
MAX_TAGS = 10
"""At most this many tags per item (most frequent first, then alphabetical)."""
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flag columns of ml-100k ``u.item``, in ``u.genre`` order."""


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


def tag_text(rows: pd.DataFrame, n_items: int) -> pd.Series:
    """Per item (``rows``: int ``item`` position, ``tag``): unique lower-cased stripped tags, most frequent first
    then alphabetical, at most MAX_TAGS; "" for an item without tag rows."""
    tags = rows["tag"].astype(str).str.strip().str.lower()
    df = pd.DataFrame({"item": rows["item"].to_numpy(np.int64), "tag": tags.to_numpy()})
    counts = df[df["tag"] != ""].groupby(["item", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True], kind="stable")
    joined = counts.groupby("item").head(MAX_TAGS).groupby("item")["tag"].agg(", ".join)
    out = np.full(n_items, "", dtype=object)
    out[joined.index.to_numpy()] = joined.to_numpy()
    return pd.Series(out).astype(str)


def _tag_rows(table: Table, catalog: Catalog, problems: BadRows) -> pd.DataFrame:
    """Valid tag rows: external ``item_id`` and ``user_id`` ("" when the file has none), ``tag``, ``timestamp``
    (-1 when the file has none)."""
    idx, checks = item_refs(table, catalog)
    kept, keep = problems.apply(table, checks)
    f = kept.frame
    ts = pd.to_numeric(f["timestamp"], errors="coerce") if "timestamp" in f else pd.Series(-1, index=f.index)
    return pd.DataFrame({
        "item_id": catalog.items["item_id"].to_numpy()[idx[keep]],
        "user_id": normalise_external(f["user_id"]).to_numpy() if "user_id" in f else "",
        "tag": as_text(f["tag"]).to_numpy(),
        "timestamp": ts.fillna(-1).to_numpy(np.int64),
    })


def _attach_tags(catalog: Catalog, tags: Table | None, problems: BadRows) -> pd.DataFrame | None:
    """Add the ``tags`` text column from every tag row ("" everywhere when the data set has no tags file) and
    return the rows: ``prepare`` rebuilds the column from the training period's rows only
    (:func:`recsys_llm.data.splits.training_tags`)."""
    if tags is None:
        catalog.items["tags"] = ""
        return None
    rows = _tag_rows(tags, catalog, problems)
    item = catalog.item_map.to_internal(rows["item_id"])
    catalog.items["tags"] = tag_text(rows.assign(item=item), len(catalog.items))
    logger.info("%s: tags for %d of %d items", tags.file, (catalog.items["tags"] != "").sum(), len(catalog.items))
    return rows


def _genres(s: pd.Series) -> pd.Series:
    """'Adventure|Animation' -> 'Adventure, Animation'; '(no genres listed)' -> ''."""
    text = as_text(s)
    return text.where(text != "(no genres listed)", "").str.replace("|", ", ", regex=False)


def _sources(*paths: Path | None) -> list[str]:
    return [str(p) for p in paths if p is not None]


def load_ml_latest(cfg: DataConfig, problems: BadRows) -> Loaded:
    """ml-latest / ml-latest-small: ratings.csv, movies.csv, optional tags.csv (each may be .gz)."""
    folder = _folder(cfg)
    ratings_path, movies_path = find(folder, "ratings.csv", cfg.dataset), find(folder, "movies.csv", cfg.dataset)
    tags_path = find_optional(folder, "tags.csv")
    movies = require(read_csv(movies_path, problems), {"item_id": "movieId", "title": "title", "genres": "genres"})
    movies.frame["genres"] = _genres(movies.frame["genres"])
    catalog = canonical_catalog(movies, problems)
    tags = None if tags_path is None else require(read_csv(tags_path, problems), {"item_id": "movieId", "tag": "tag"},
                                                  {"user_id": "userId", "timestamp": "timestamp"})
    tag_rows = _attach_tags(catalog, tags, problems)
    cols = {"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp", "rating": "rating"}
    inter = map_interactions(require(read_csv(ratings_path, problems), cols), catalog, problems)
    return Loaded(catalog, inter, _sources(ratings_path, movies_path, tags_path), tag_rows=tag_rows)


def load_ml_dat(cfg: DataConfig, problems: BadRows) -> Loaded:
    """ml-1m / ml-10m: ratings.dat and movies.dat with '::' separators; ml-10m optionally tags.dat."""
    folder = _folder(cfg)
    enc = ("latin-1",) if cfg.dataset == "ml-1m" else ("utf-8", "latin-1")
    ratings_path, movies_path = find(folder, "ratings.dat", cfg.dataset), find(folder, "movies.dat", cfg.dataset)
    tags_path = find_optional(folder, "tags.dat") if cfg.dataset == "ml-10m" else None
    movies = read_headerless(movies_path, "::", ["MovieID", "Title", "Genres"], problems, enc)
    movies = require(movies, {"item_id": "MovieID", "title": "Title", "genres": "Genres"})
    movies.frame["genres"] = _genres(movies.frame["genres"])
    catalog = canonical_catalog(movies, problems)
    tag_rows = None
    if cfg.dataset == "ml-10m":
        tags = None
        if tags_path is not None:
            tags = read_headerless(tags_path, "::", ["UserID", "MovieID", "Tag", "Timestamp"], problems, enc)
            tags = require(tags, {"item_id": "MovieID", "tag": "Tag"}, {"user_id": "UserID", "timestamp": "Timestamp"})
        tag_rows = _attach_tags(catalog, tags, problems)
    ratings = read_headerless(ratings_path, "::", ["UserID", "MovieID", "Rating", "Timestamp"], problems, enc)
    cols = {"user_id": "UserID", "item_id": "MovieID", "rating": "Rating", "timestamp": "Timestamp"}
    inter = map_interactions(require(ratings, cols), catalog, problems)
    return Loaded(catalog, inter, _sources(ratings_path, movies_path, tags_path), tag_rows=tag_rows)


def _ml100k_genres(table: Table, problems: BadRows) -> Table:
    """Validate the 19 genre flags (0/1) and replace them by one 'Action, Comedy' text column."""

    def flag_check(genre: str) -> Check:
        bad = ~table.frame[genre].astype(str).isin(["0", "1"]).to_numpy()
        return Check(
            "bad_value", genre, bad, lambda i: f"genre flag must be 0 or 1, got {table.value(i, genre)!r}"
        )

    kept, _ = problems.apply(table, [flag_check(g) for g in ML100K_GENRES])
    text = pd.Series("", index=kept.frame.index, dtype=object)
    for g in ML100K_GENRES[1:]:
        text = text + np.where(kept.frame[g].astype(str) == "1", g + ", ", "")
    frame = kept.frame[["item_id", "title"]].assign(genres=text.str.removesuffix(", "))
    return Table(frame, kept.file, kept.rows, kept.unit, kept.labels)


def _ml100k_descriptions(path: Path, items: pd.DataFrame, problems: BadRows) -> pd.Series:
    """movie_title,wiki_summary CSV joined on the exact u.item title."""
    desc = require(read_csv(path, problems), {"title": "movie_title", "description": "wiki_summary"}).frame
    desc = desc.assign(title=as_text(desc["title"]), description=as_text(desc["description"]))
    n_dup = int(desc["title"].duplicated().sum())
    if n_dup:
        logger.warning("%s: %d duplicate movie_title rows; the first of each is used", path, n_dup)
    lookup = desc.drop_duplicates("title").set_index("title")["description"]
    out = items["title"].map(lookup).fillna("").astype(str)
    logger.info("%s: descriptions for %d of %d items", path, int((out != "").sum()), len(out))
    return out


def load_ml100k(cfg: DataConfig, problems: BadRows) -> Loaded:
    """ml-100k: u.data (tab: user item rating timestamp) and u.item (latin-1, pipe, 19 genre flags)."""
    folder = _folder(cfg)
    item_path, data_path = find(folder, "u.item", cfg.dataset), find(folder, "u.data", cfg.dataset)
    names = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
    raw = read_headerless(item_path, "|", names, problems, ("latin-1",))
    raw = require(raw, {"item_id": "movie id", "title": "movie title", **{g: g for g in ML100K_GENRES}})
    catalog = canonical_catalog(_ml100k_genres(raw, problems), problems)
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
    ratings = read_headerless(data_path, "\t", names, problems, ("utf-8", "latin-1"))
    cols = {"user_id": "user id", "item_id": "item id", "rating": "rating", "timestamp": "timestamp"}
    return Loaded(catalog, map_interactions(require(ratings, cols), catalog, problems), sources)
