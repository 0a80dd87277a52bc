"""The amazon loader on tiny review/metadata dumps of both layouts (2018 and 2023), plain and gzip; k-core."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_llm.cli import main
from recsys_llm.config import DataConfig
from recsys_llm.data.io import DataError, load_dataset
from recsys_llm.io_utils import load_json

REVIEWS_2018 = [
    {"overall": 5.0, "verified": True, "reviewerID": "U1", "asin": "A1", "reviewText": "great", "unixReviewTime": 1000},
    {"overall": 4.0, "reviewerID": "U1", "asin": "A2", "unixReviewTime": 1100, "style": {"Size:": "L"}},
    {"overall": 3.0, "reviewerID": "U1", "asin": "A3", "unixReviewTime": 1200},
    {"overall": 2.0, "reviewerID": "U2", "asin": "A1", "unixReviewTime": 1300},
    {"overall": 1.0, "reviewerID": "U2", "asin": "A2", "unixReviewTime": 1250},
    {"overall": 5.0, "reviewerID": "U2", "asin": "NOMETA", "unixReviewTime": 1400},
]
META_2018 = [
    {"asin": "A1", "title": "Drill &amp; Bits", "brand": "Acme", "category": ["Tools &amp; Home", "Drills"],
     "description": ["<b>Strong</b> drill.", "Two speeds."], "price": "$9.99", "also_buy": ["A2"]},
    {"asin": "A2", "title": "Saw", "brand": "", "category": [], "description": "A sharp saw.", "price": ""},
    {"asin": "A2", "title": "Saw (repeated record)", "brand": "", "category": []},
    {"asin": "A3", "title": "Glue", "brand": "Stick&#39;s", "category": ["Tools &amp; Home"], "description": []},
    {"asin": "A9", "title": "Nobody reviewed this"},
]
REVIEWS_2023 = [
    {"rating": 5.0, "title": "ok", "text": "x", "images": [], "asin": "B1v", "parent_asin": "B1",
     "user_id": "V1", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
    {"rating": 4.0, "asin": "B2", "parent_asin": "B2", "user_id": "V1", "timestamp": 1588687729000},
    {"rating": 3.0, "asin": "B1w", "parent_asin": "B1", "user_id": "V2", "timestamp": 1588687700000},
    {"rating": 2.0, "asin": "B2", "parent_asin": "B2", "user_id": "V2", "timestamp": 1588687800000},
]
META_2023 = [
    {"main_category": "All Beauty", "title": "Shea butter", "average_rating": 4.8, "features": [],
     "description": ["Rich &amp; creamy.", "<br/>For dry skin."], "price": 12.99, "store": "Howard",
     "categories": ["Beauty", "Skin Care"], "details": {"Brand": "Howard"}, "parent_asin": "B1"},
    {"main_category": "All Beauty", "title": "Comb", "description": [], "price": None, "store": None,
     "categories": [], "parent_asin": "B2"},
]


def _jsonl(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _load(tmp_path: Path, reviews: list[dict], meta: list[dict], suffix: str = ".jsonl.gz", **cfg) -> object:
    r = _jsonl(tmp_path / f"reviews{suffix}", reviews)
    m = _jsonl(tmp_path / f"meta{suffix}", meta)
    return load_dataset(DataConfig(dataset="amazon", path=str(r), items_path=str(m), **cfg))


def test_2018_layout_gzip(tmp_path):
    ds = _load(tmp_path, REVIEWS_2018, META_2018)
    items = ds.items.set_index("item_id")
    assert list(ds.items.columns) == ["item", "item_id", "title", "brand", "categories", "description", "price"]
    assert list(items.index) == ["A1", "A2", "A3"]  # only reviewed items that have metadata; A9 left out
    assert items.loc["A1"].tolist()[1:] == ["Drill & Bits", "Acme", "Tools & Home, Drills",
                                             "Strong drill. Two speeds.", "$9.99"]
    assert items.loc["A2", "title"] == "Saw" and items.loc["A2", "description"] == "A sharp saw."
    assert items.loc["A3", "brand"] == "Stick's" and items.loc["A3", "price"] == ""
    assert ds.dropped == {"duplicate_metadata": 1, "item_not_in_metadata": 1}
    assert ds.users["user_id"].tolist() == ["U1", "U2"]
    u2 = ds.interactions[ds.interactions["user"] == 1]
    assert u2["timestamp"].tolist() == [1250, 1300] and u2["rating"].tolist() == [1.0, 2.0]  # sorted by time


def test_2023_layout_plain(tmp_path):
    ds = _load(tmp_path, REVIEWS_2023, META_2023, suffix=".jsonl")
    items = ds.items.set_index("item_id")
    assert items.loc["B1"].tolist()[1:] == ["Shea butter", "Howard", "Beauty, Skin Care",
                                             "Rich & creamy. For dry skin.", "12.99"]
    assert items.loc["B2"].tolist()[1:] == ["Comb", "", "All Beauty", "", ""]  # main_category when no categories
    inter = ds.interactions
    assert inter["timestamp"].tolist() == [1588687728, 1588687729, 1588687700, 1588687800]  # ms -> s
    assert inter["item"].tolist() == [0, 1, 0, 1]  # parent_asin, not the variant asin


def test_old_meta_literals_and_ratings_csv(tmp_path):
    meta = tmp_path / "meta_2014.json"  # the 2014 dumps are Python dict literals, one per line
    meta.write_text("{'asin': 'A1', 'title': 'Old', 'categories': [['Books', 'Fiction'], ['Books']], "
                    "'brand': 'Pen', 'price': 3.5}\n{'asin': 'A2', 'title': 'Older', 'description': 'Dusty'}\n")
    ratings = tmp_path / "ratings.csv"  # "ratings only" file: item,user,rating,timestamp without a header
    ratings.write_text("A1,U1,5.0,100\nA2,U1,4.0,200\nA1,U2,3.0,150\n")
    ds = load_dataset(DataConfig(dataset="amazon", path=str(ratings), items_path=str(meta)))
    assert ds.items["categories"].tolist() == ["Books, Fiction", ""]
    assert ds.items["price"].tolist() == ["3.5", ""] and ds.items["description"].tolist() == ["", "Dusty"]
    assert len(ds.interactions) == 3
    header = tmp_path / "bench.csv"  # the 2023 benchmark CSVs have a header
    header.write_text("user_id,parent_asin,rating,timestamp\nU1,A1,5,1588687728923\nU1,A2,4,1588687738923\n")
    ds = load_dataset(DataConfig(dataset="amazon", path=str(header), items_path=str(meta)))
    assert ds.interactions["timestamp"].tolist() == [1588687728, 1588687738]


def test_k_core_iterates_until_stable(tmp_path):
    # U3 has 1 review -> removed; then A3 (reviewed by U1 and U3) has 1 -> removed; then U1 is left with 2.
    reviews = [{"reviewerID": u, "asin": a, "overall": 5, "unixReviewTime": t} for t, (u, a) in enumerate(
        [("U1", "A1"), ("U1", "A2"), ("U1", "A3"), ("U2", "A1"), ("U2", "A2"), ("U3", "A3"), ("U4", "A1"), ("U4", "A2")])]
    meta = [{"asin": a, "title": a} for a in ("A1", "A2", "A3")]
    ds = _load(tmp_path, reviews, meta, min_user_interactions=2, min_item_interactions=2)
    assert ds.users["user_id"].tolist() == ["U1", "U2", "U4"] and ds.items["item_id"].tolist() == ["A1", "A2"]
    assert len(ds.interactions) == 6
    ds = _load(tmp_path, reviews, meta, min_user_interactions=3)
    assert ds.users["user_id"].tolist() == ["U1"] and ds.items["item_id"].tolist() == ["A1", "A2", "A3"]
    with pytest.raises(DataError, match=r"k-core filter data.min_user_interactions=4, data.min_item_interactions=0"):
        _load(tmp_path, reviews, meta, min_user_interactions=4)


def test_k_core_and_duplicates_for_other_loaders(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\na,1,5\na,1,5\na,2,6\nb,1,7\nb,2,8\nc,3,9\na,1,10\n")
    cfg = DataConfig(dataset="generic", path=str(inter), min_user_interactions=2, min_item_interactions=2)
    ds = load_dataset(cfg)
    assert ds.dropped == {"duplicate_interaction": 1}  # the exact repeat (a, 1, 5); (a, 1, 10) is another event
    assert ds.users["user_id"].tolist() == ["a", "b"] and len(ds.interactions) == 5
    assert ds.n_items == 2  # item 3 lost its one interaction to the k-core, so it leaves the catalog too


def test_bad_amazon_input_names_file_line_and_field(tmp_path):
    reviews = [*REVIEWS_2018[:2], {"overall": 5.0, "reviewerID": None, "asin": "A1", "unixReviewTime": 5}]
    with pytest.raises(DataError, match=r"reviews\.jsonl: line 3, column 'reviewerID': value is empty"):
        _load(tmp_path, reviews, META_2018, suffix=".jsonl")
    r = _jsonl(tmp_path / "r.jsonl", REVIEWS_2018)
    r.write_text(r.read_text() + "\n\n{not json}\n")  # two blank lines: the bad one is line 9
    m = _jsonl(tmp_path / "m.jsonl", META_2018)
    with pytest.raises(DataError, match=r"r\.jsonl: line 9: not valid JSON"):
        load_dataset(DataConfig(dataset="amazon", path=str(r), items_path=str(m)))
    ds = load_dataset(DataConfig(dataset="amazon", path=str(r), items_path=str(m), on_bad_rows="drop"))
    assert ds.dropped["malformed_line"] == 1
    with pytest.raises(DataError, match=r"meta\.jsonl: no metadata record names a reviewed item"):
        _load(tmp_path, REVIEWS_2018, META_2023, suffix=".jsonl")
    with pytest.raises(DataError, match=r"no record has the field 'reviewerID' or 'user_id'"):
        _load(tmp_path, [{"asin": "A1", "overall": 5}], META_2018, suffix=".jsonl")


def test_prepare_through_the_cli(tmp_path, capsys):
    r = _jsonl(tmp_path / "reviews.jsonl.gz", REVIEWS_2018)
    m = _jsonl(tmp_path / "meta.jsonl.gz", META_2018)
    run = tmp_path / "run"
    rc = main(["prepare", "--dataset", "amazon", "--path", str(r), "--items-path", str(m), "--run-dir", str(run),
               "--cold-item-fraction", "0"])
    assert rc == 0, capsys.readouterr().err
    assert load_json(run / "config.json")["text"]["item_template"] == "title_brand_categories_description"
    texts = [json.loads(line)["text"] for line in (run / "text" / "items.jsonl").read_text().splitlines()]
    assert texts[0] == "Drill & Bits. Brand: Acme. Category: Tools & Home, Drills. Strong drill. Two speeds."
    assert pd.read_parquet(run / "splits" / "test.parquet")["item"].tolist() == [2, 0]
    assert "dropped rows" in capsys.readouterr().out
    assert np.array_equal(pd.read_parquet(run / "data" / "items.parquet")["item"], np.arange(3))


def test_item_k_core_removes_the_items_it_empties_but_keeps_description_only_items(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\na,1,5\na,2,6\nb,1,7\nb,2,8\nc,3,9\nc,1,10\nc,2,11\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n1,One\n2,Two\n3,Three\n4,Four (no interactions yet)\n")
    ds = load_dataset(DataConfig(dataset="generic", path=str(inter), items_path=str(items), min_item_interactions=2))
    assert sorted(ds.items["item_id"].astype(str)) == ["1", "2", "4"]  # 3 had one interaction: removed
    assert len(ds.interactions) == 6 and ds.interactions["item"].max() < ds.n_items
