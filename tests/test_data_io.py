"""Loaders: canonical output of every format, clear errors for bad rows, drop mode, bundled and real data.

Fixture files are tiny and written to tmp_path (never copies of ml-100k).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from recsys_llm.config import DataConfig
from recsys_llm.data.io import DataError, available_datasets, load_dataset

ML_LATEST = {
    "movies.csv": (
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "10,Untitled (2018),(no genres listed)\n"
        "3,Cold Start (2000),Drama\n"
    ),
    "ratings.csv": (
        "userId,movieId,rating,timestamp\n"
        "10,1,4.0,300\n"
        "2,2,3.5,200\n"
        "10,10,5.0,100\n"
        "2,1,1.0,200\n"
        "2,10,2.0,50\n"
    ),
    "tags.csv": (
        "userId,movieId,tag,timestamp\n"
        "2,1,Pixar,1\n"
        "10,1, pixar ,2\n"
        "2,1,fun,3\n"
        "2,1,Animation,4\n"
        "2,2,politics,5\n"
    ),
}
ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Amélie (2001)|01-Jan-2001||http://y|0|0|0|0|0|1|0|0|0|0|0|0|0|0|1|0|0|0|0\n"
    "3|unknown|||http://z|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
ML100K_DATA = "5\t1\t4\t881250949\n1\t2\t3\t881250950\n5\t2\t2\t881250940\n"
ML1M = {
    "movies.dat": "1::Toy Story (1995)::Animation|Children's\n2::Café (1999)::Drama\n",
    "ratings.dat": "1::1::5::978300760\n1::2::3::978300700\n7::2::4::978300000\n",
}


def _write_folder(folder: Path, files: dict[str, str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def _assert_canonical(ds) -> None:
    inter, items, users = ds.interactions, ds.items, ds.users
    assert list(inter.columns) == ["user", "item", "timestamp", "rating"]
    assert inter.dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float32"]
    keys = inter[["user", "timestamp"]].to_numpy()
    assert np.all(np.diff(keys[:, 0]) >= 0)
    same_user = np.diff(keys[:, 0]) == 0
    assert np.all(np.diff(keys[:, 1])[same_user] >= 0)
    assert np.array_equal(items["item"].to_numpy(), np.arange(len(items)))
    assert np.array_equal(users["user"].to_numpy(), np.arange(len(users)))
    assert set(np.unique(inter["user"])) == set(range(len(users)))  # every user has interactions
    for col in ["item_id", *ds.text_columns]:
        assert pd.api.types.is_string_dtype(items[col]) and not items[col].isna().any(), col
    ds.validate()


def _ml_latest(tmp_path: Path, **overrides: str) -> DataConfig:
    _write_folder(tmp_path / "ml", {**ML_LATEST, **overrides})
    return DataConfig(dataset="ml-latest", path=str(tmp_path / "ml"))


# ------------------------------------------------------------------------------------------ canonical output


def test_ml_latest_canonical(tmp_path):
    ds = load_dataset(_ml_latest(tmp_path))
    _assert_canonical(ds)
    assert ds.items["item_id"].tolist() == ["1", "2", "3", "10"]  # numeric order of external ids
    assert ds.users["user_id"].tolist() == ["2", "10"]
    assert ds.items["genres"].tolist() == [
        "Adventure, Animation, Children",
        "Comedy, Drama, Romance",
        "Drama",
        "",
    ]
    assert ds.items["title"][1] == "American President, The (1995)"
    assert ds.items["tags"].tolist() == ["pixar, animation, fun", "politics", "", ""]
    # user "2" (internal 0) sorted by time, ties keep file order; item "10" is internal 3
    first = ds.interactions[ds.interactions["user"] == 0]
    assert first["item"].tolist() == [3, 1, 0] and first["timestamp"].tolist() == [50, 200, 200]
    assert first["rating"].tolist() == [2.0, 3.5, 1.0]
    assert ds.items["title"][2] == "Cold Start (2000)"  # kept although nobody rated it
    assert ds.dropped == {}


def test_min_rating_filters_before_mapping_users(tmp_path):
    ds = load_dataset(DataConfig(dataset="ml-latest", path=str(_ml_latest(tmp_path).path), min_rating=4.0))
    assert len(ds.interactions) == 2 and ds.users["user_id"].tolist() == ["10"]
    assert ds.n_items == 4


def test_ml100k_genres_and_descriptions(tmp_path):
    folder = _write_folder(tmp_path / "ml100k", {"u.item": ML100K_ITEM}, encoding="latin-1")
    _write_folder(folder, {"u.data": ML100K_DATA})
    desc = tmp_path / "wiki.csv"
    desc.write_text('movie_title,wiki_summary\nToy Story (1995),"A film, about toys."\nNot There (1990),x\n')
    ds = load_dataset(DataConfig(dataset="ml-100k", path=str(folder), descriptions_path=str(desc)))
    _assert_canonical(ds)
    assert ds.items["title"].tolist() == ["Toy Story (1995)", "Amélie (2001)", "unknown"]
    assert ds.items["genres"].tolist() == ["Animation, Children's, Comedy", "Comedy, Romance", ""]
    assert ds.items["description"].tolist() == ["A film, about toys.", "", ""]
    assert ds.users["user_id"].tolist() == ["1", "5"]
    assert ds.interactions["timestamp"].tolist() == [881250950, 881250940, 881250949]
    no_desc = load_dataset(DataConfig(dataset="ml-100k", path=str(folder)))
    assert "description" not in no_desc.items.columns


def test_ml1m_latin1(tmp_path):
    folder = _write_folder(tmp_path / "ml1m", ML1M, encoding="latin-1")
    ds = load_dataset(DataConfig(dataset="ml-1m", path=str(folder)))
    _assert_canonical(ds)
    assert ds.items["title"].tolist() == ["Toy Story (1995)", "Café (1999)"]
    assert ds.items["genres"][0] == "Animation, Children's" and "tags" not in ds.items.columns
    assert ds.interactions["item"].tolist() == [1, 0, 1]


def test_ml10m_utf8_with_tags(tmp_path):
    tags = "1::1::Pixar::1\n2::1::toys::2\n3::1::pixar::3\n1::2::french::4\n"
    folder = _write_folder(tmp_path / "ml10m", {**ML1M, "tags.dat": tags})
    ds = load_dataset(DataConfig(dataset="ml-10m", path=str(folder)))
    _assert_canonical(ds)
    assert ds.items["title"][1] == "Café (1999)"
    assert ds.items["tags"].tolist() == ["pixar, toys", "french"]


GENERIC_ITEMS = pd.DataFrame(
    {"item_id": ["b", "a", "c"], "title": ["B", "A", None], "genre": ["x", None, "z"]}
)
GENERIC_INTER = pd.DataFrame({
    "user_id": ["u2", "u1", "u1"],
    "item_id": ["a", "b", "a"],
    "timestamp": ["2020-01-02T00:00:00Z", "2020-01-01", "1577836800"],
    "rating": [1.0, 2.5, 5.0],
})  # fmt: skip


def _write_generic(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text(
            "".join(
                json.dumps({k: v for k, v in r.items() if v is not None}) + "\n"
                for r in df.to_dict("records")
            )
        )
    else:
        df.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_generic_formats(tmp_path, ext):
    inter = _write_generic(GENERIC_INTER, tmp_path / f"inter{ext}")
    items = _write_generic(GENERIC_ITEMS, tmp_path / f"items{ext}")
    ds = load_dataset(DataConfig(dataset="generic", path=str(inter), items_path=str(items)))
    _assert_canonical(ds)
    assert ds.items["item_id"].tolist() == ["a", "b", "c"]
    assert ds.items["title"].tolist() == ["A", "B", ""] and ds.items["genre"].tolist() == ["", "x", "z"]
    assert ds.users["user_id"].tolist() == ["u1", "u2"]
    # ISO dates are seconds since epoch (UTC): u1 rated a at 2020-01-01 00:00 (given as seconds) then b
    assert ds.interactions.to_numpy().tolist() == [
        [0, 1, 1577836800, 2.5],
        [0, 0, 1577836800, 5.0],
        [1, 0, 1577923200, 1.0],
    ]


def test_generic_optional_columns_and_title_fallback(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id\n1,007\n1,8\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,year,name\n007,1962,Dr. No\n8,1963,\n")
    ds = load_dataset(DataConfig(dataset="generic", path=str(inter), items_path=str(items)))
    _assert_canonical(ds)
    assert ds.interactions["timestamp"].tolist() == [0, 1]  # row position when there is no time
    assert ds.interactions["rating"].isna().all()
    assert ds.items["item_id"].tolist() == ["007", "8"]  # ids stay text: "007" is not 7
    assert ds.items["title"].tolist() == ["Dr. No", ""] and ds.items["year"].tolist() == ["1962", "1963"]
    no_items = load_dataset(
        DataConfig(dataset="generic", path=str(inter))
    )  # catalog = ids seen, titled by id
    assert no_items.items["title"].tolist() == ["007", "8"] and len(no_items.interactions) == 2
    items.write_text("item_id,year\n007,1962\n8,1963\n")
    ds = load_dataset(DataConfig(dataset="generic", path=str(inter), items_path=str(items)))
    assert ds.items["title"].tolist() == ["007", "8"]


# ------------------------------------------------------------------------------------------------ bad input


def _generic(tmp_path: Path, inter_name: str, inter_text: str, items_text: str = "item_id,title\na,A\nb,B\n"):
    (tmp_path / inter_name).write_text(inter_text)
    (tmp_path / "items.csv").write_text(items_text)
    return DataConfig(
        dataset="generic", path=str(tmp_path / inter_name), items_path=str(tmp_path / "items.csv")
    )


BAD_ML_LATEST = [
    # (file, replacement text, expected fragments)
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,abc,6\n", ["row 3", "column 'rating'", "'abc'"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,inf,5\n", ["row 2", "column 'rating'", "finite"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n\n1,1,4,yesterday\n", ["row 4", "column 'timestamp'", "'yesterday'"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n1,99,4,6\n", ["row 3", "column 'movieId'", "'99'", "movies.csv"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n,1,4,5\n", ["row 2", "column 'userId'", "empty"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n1,1,4,5,9\n", ["row 3", "expected 4 fields"]),
    ("movies.csv", "movieId,title,genres\n1,A,x\n2,B,y\n1,C,z\n", ["row 4", "column 'movieId'", "row 2", "duplicate"]),
    ("movies.csv", "movieId,title,genres\n", ["no data rows"]),
    ("ratings.csv", "userId,movieId,score,timestamp\n1,1,4,5\n", ["missing required column 'rating'", "score"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "expected"), BAD_ML_LATEST)
def test_bad_movielens_csv_rows(tmp_path, name, text, expected):
    with pytest.raises(DataError) as e:
        load_dataset(_ml_latest(tmp_path, **{name: text}))
    msg = str(e.value)
    assert name in msg and all(frag in msg for frag in expected), msg


def test_bad_dat_and_tab_lines(tmp_path):
    folder = _write_folder(tmp_path / "ml1m", {**ML1M, "ratings.dat": "1::1::5::1\n1::2::3\n"})
    with pytest.raises(DataError, match=r"ratings\.dat: row 2: expected 4 fields separated by '::', found 3"):
        load_dataset(DataConfig(dataset="ml-1m", path=str(folder)))
    ds = load_dataset(DataConfig(dataset="ml-1m", path=str(folder), on_bad_rows="drop"))
    assert ds.dropped == {"malformed_line": 1} and len(ds.interactions) == 1
    folder = _write_folder(
        tmp_path / "ml100k", {"u.item": ML100K_ITEM, "u.data": "1\t1\t4\t5\n1\t1\t4.5x\t6\n"}
    )
    with pytest.raises(DataError, match=r"u\.data: row 2, column 'rating': cannot parse '4\.5x'"):
        load_dataset(DataConfig(dataset="ml-100k", path=str(folder)))
    (folder / "u.item").write_text(ML100K_ITEM.replace("|0|0|0|1|1|1|", "|0|0|0|7|1|1|", 1))
    with pytest.raises(
        DataError, match=r"u\.item: row 1, column 'Animation': genre flag must be 0 or 1, got '7'"
    ):
        load_dataset(DataConfig(dataset="ml-100k", path=str(folder)))


def test_bad_generic_inputs(tmp_path):
    cfg = _generic(
        tmp_path,
        "i.jsonl",
        '{"user_id": 1, "item_id": "a", "timestamp": 5}\n{"user_id": 1, "item_id": "b", "timestamp": "soon"}\n',
    )
    with pytest.raises(DataError, match=r"i\.jsonl: line 2, column 'timestamp': cannot parse 'soon'"):
        load_dataset(cfg)
    cfg = _generic(tmp_path, "i.jsonl", '{"user_id": 1, "item_id": "a"}\n{"user_id": 1, "item_id": \n')
    with pytest.raises(DataError, match=r"i\.jsonl: line 2: not valid JSON"):
        load_dataset(cfg)
    cfg = _generic(tmp_path, "i.parquet", "")
    pd.DataFrame({"user_id": ["1", "1"], "item_id": ["a", "zz"]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(
        DataError, match=r"i\.parquet: record 2, column 'item_id': item id 'zz' is not in the item catalog"
    ):
        load_dataset(cfg)
    cfg = _generic(tmp_path, "i.csv", "user_id,item_id\n1,a\n", items_text="item_id,title\na,A\n a,B\n")
    with pytest.raises(
        DataError, match=r"items\.csv: row 3, column 'item_id': duplicate item id 'a' \(first at row 2\)"
    ):
        load_dataset(cfg)
    cfg = _generic(tmp_path, "i.csv", "user,item_id\n1,a\n")
    with pytest.raises(
        DataError, match=r"i\.csv: missing required column 'user_id' \(columns found: user, item_id\)"
    ):
        load_dataset(cfg)
    for text in ("", "user_id,item_id\n"):
        with pytest.raises(DataError, match=r"i\.csv: .*empty"):
            load_dataset(_generic(tmp_path, "i.csv", text))
    with pytest.raises(
        DataError, match=r"i\.xlsx: unknown format '\.xlsx'; use one of \.csv, \.tsv, \.jsonl, \.parquet"
    ):
        load_dataset(_generic(tmp_path, "i.xlsx", "x"))


def test_bad_config(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'ml-20m'; choose one of ml-latest-small, ml-100k"):
        load_dataset(DataConfig(dataset="ml-20m"))
    with pytest.raises(DataError, match="needs data.path"):
        load_dataset(DataConfig(dataset="ml-100k"))
    with pytest.raises(DataError, match="missing u.item"):
        load_dataset(DataConfig(dataset="ml-100k", path=str(tmp_path)))
    with pytest.raises(DataError, match="nope.csv: file not found"):
        load_dataset(DataConfig(dataset="generic", path=str(tmp_path / "nope.csv")))
    assert available_datasets() == [
        "ml-latest-small", "ml-100k", "ml-1m", "ml-10m", "ml-latest", "generic", "amazon", "unisrec",
    ]


def test_drop_mode_counts_per_reason(tmp_path, caplog):
    ratings = (
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,5\n"
        "1,2,abc,6\n"  # bad_rating
        "1,2,nan,6\n"  # bad_rating
        "1,99,4,6\n"  # unknown_item
        ",1,4,6\n"  # empty_id
        "1,1,4,x\n"  # bad_timestamp
        "1,1,4,7,extra\n"  # malformed_line
        "2,1,abc,zzz\n"  # both bad: counted once, under its first reason (timestamp check comes first)
        "2,3,3,8\n"
    )
    movies = ML_LATEST["movies.csv"] + "1,Toy Story again,Drama\n"  # duplicate_item (first kept)
    cfg = _ml_latest(tmp_path, **{"ratings.csv": ratings, "movies.csv": movies})
    cfg.on_bad_rows = "drop"
    with caplog.at_level("WARNING", logger="recsys_llm.data.io"):
        ds = load_dataset(cfg)
    assert ds.dropped == {
        "bad_rating": 2, "unknown_item": 1, "empty_id": 1, "bad_timestamp": 2, "malformed_line": 1, "duplicate_item": 1,
    }  # fmt: skip
    assert len(ds.interactions) == 2 and ds.items["title"][0] == "Toy Story (1995)"
    assert "bad_rating" in caplog.text
    _assert_canonical(ds)


# ------------------------------------------------------------------------------------------------ real data


def test_bundled_ml_latest_small():
    ds = load_dataset(DataConfig(dataset="ml-latest-small"))
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_836, 610, 9_742)
    _assert_canonical(ds)
    assert (ds.items["tags"] != "").sum() > 1000
    assert (
        ds.items.loc[ds.items["item_id"] == "1", "genres"].item()
        == "Adventure, Animation, Children, Comedy, Fantasy"
    )


def test_real_ml100k_with_descriptions():
    folder, desc = SHARED_DATA / "ml-100k", SHARED_DATA / "ml-100k-wiki-summaries" / "movie_wiki.csv"
    if not (folder / "u.data").exists() or not desc.exists():
        pytest.skip(f"real data not found at {folder} and {desc} (shared data folder absent)")
    ds = load_dataset(DataConfig(dataset="ml-100k", path=str(folder), descriptions_path=str(desc)))
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert abs(int((ds.items["description"] != "").sum()) - 1_541) <= 5
    _assert_canonical(ds)
